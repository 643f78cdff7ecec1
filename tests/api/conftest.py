from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from datasets.models import Export
from datasets.services.tokens import api_token_create
from tests.exports.builders import build_project, share
from tests.exports.conftest import build_export


@pytest.fixture(autouse=True)
def generous_throttles(settings):
    """Tests make many quick requests; the throttle test sets its own rates."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "100000/min", "user": "100000/min"},
    }
    cache.clear()
    yield
    cache.clear()


@dataclass
class World:
    project: object
    other_project: object
    export: Export
    users: dict
    image: object
    other_image: object

    def client(self, who: str) -> APIClient:
        client = APIClient()
        if who != "anonymous":
            client.force_login(self.users[who])
        return client

    def token_client(self, who: str) -> APIClient:
        _, raw = api_token_create(user=self.users[who], name="test")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
        return client


def make_world() -> World:
    User = get_user_model()
    built = build_project(n_images=6, name="Main")
    other = build_project(n_images=2, name="Other", seed=1)
    users = {
        "owner": built.owner,
        "requester": share(built.project, "requester", "req"),
        "researcher": share(built.project, "researcher", "res"),
        "other_researcher": share(other.project, "researcher", "res-other"),
        "staff": User.objects.create_user("staff", is_staff=True),
        "superuser": User.objects.create_superuser("root", email="root@example.org", password=None),
    }
    export = build_export(built.project, formats=["coco", "shards"], min_shards=2)
    return World(project=built.project, other_project=other.project, export=export, users=users,
                 image=built.images[0], other_image=other.images[0])


@pytest.fixture
def world(db) -> World:
    return make_world()
