"""Fixtures of the crowd provider tests (imported by name into each test module).

``fake_mturk`` runs ``tests.crowd.fake_mturk`` on loopback and points the settings (and so the
one boto3 adapter) at it; nothing in ``crowd`` is replaced.
"""
from __future__ import annotations

from decimal import Decimal

import pytest

from tests.crowd.fake_mturk import FakeMTurkServer

TEST_KEY_ID = "AKIDFAKEMTURK0000000"
TEST_SECRET = "fake-secret-access-key-for-tests"


@pytest.fixture
def fake_mturk(settings):
    from crowd.providers.mturk import reset_clients

    server = FakeMTurkServer().start()
    settings.MTURK_ENDPOINT_URL = server.url
    settings.AWS_ACCESS_KEY_ID = TEST_KEY_ID
    settings.AWS_SECRET_ACCESS_KEY = TEST_SECRET
    settings.CROWD_ALLOW_HTTP_LOOPBACK = True
    settings.MTURK_MAX_ATTEMPTS = 4
    settings.MTURK_READ_TIMEOUT = 5.0
    reset_clients()
    yield server
    server.stop()
    reset_clients()


def worker_env(server) -> dict[str, str]:
    """What a Celery worker process needs to reach the fake server."""
    return {"MTURK_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": TEST_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": TEST_SECRET, "CROWD_ALLOW_HTTP_LOOPBACK": "true",
            "MTURK_MAX_ATTEMPTS": "4", "MTURK_READ_TIMEOUT": "5"}


@pytest.fixture
def make_project(django_user_model):
    from datasets.models import Project

    def make(budget: str = "100.00", name: str = "Kitchen objects") -> Project:
        owner, _ = django_user_model.objects.get_or_create(username="owner")
        return Project.objects.create(name=name, owner=owner, budget_usd=Decimal(budget))

    return make


@pytest.fixture
def make_images():
    from datasets.models import Image

    def make(project, n: int):
        return [Image.objects.create(project=project, file=f"x/{project.pk}-{i}.png", width=64, height=48,
                                     format="PNG", file_size=100, sha256=f"{project.pk:08d}{i:056d}",
                                     original_name=f"{i}.png") for i in range(n)]

    return make


@pytest.fixture
def make_stage():
    from crowd.models import CrowdStage

    def make(project, **kwargs) -> CrowdStage:
        values = dict(name="Which objects?", kind="categories", title="Which objects are in these photos?",
                      description="Tick every kind of object you see in each photo.", keywords="image,labeling",
                      reward=Decimal("0.10"), max_assignments=3, items_per_hit=2, lifetime_s=3600,
                      assignment_duration_s=600, auto_approval_delay_s=86400, min_approval_rate=95,
                      min_approved_hits=100, locales=["US", "CA"])
        values.update(kwargs)
        return CrowdStage.objects.create(project=project, **values)

    return make
