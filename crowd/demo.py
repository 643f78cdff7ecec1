"""The demo on the crowd: the demo project's work for every tool, up as HITs in our marketplace.

``demo_crowd`` does what an operator and a requester would do by hand, once:

1. a marketplace requester key for the owner (``manage.py marketplace_demo``: the project's key
   while it is active, or the one saved in ``VAR_DIR/requester-key.json``, or a new one);
2. the key as the project's ``ProviderCredentials``, endpoint ``<base url>/mturk-api/``;
3. a budget for the project when it has none;
4. the demo records the tools need (``frontend.demo.demo_seed``);
5. one ``CrowdStage`` per tool, small;
6. each stage launched by the ``crowd.stage_launch`` Celery task (queued on commit, retried until
   the web server answers) — the crowd code reaches the marketplace only through boto3 over HTTP;
7. a demo worker account ``worker`` whose password is printed once and kept in
   ``VAR_DIR/worker-password.txt``.

Running it again changes nothing and publishes nothing twice: every step first looks for what it
would make, and a stage whose HITs are all out is not launched again.

The marketplace's side (key, worker account) is its own command, ``marketplace_demo``, called as
an operator would; nothing here imports the marketplace. Publishing and paying go through
``crowd.tasks`` and boto3 only.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.db import transaction

from crowd import crypto, services, tasks
from crowd.models import HIT, CrowdStage, ProviderCredentials
from datasets.models import Project, Stage
from frontend.demo import demo_seed

DEMO_PROJECT = "Demo: everyday photos"
WORKER_USERNAME = "worker"
REWARD = Decimal("0.05")
LIFETIME_S = 3 * 86400


@dataclass
class DemoCrowdReport:
    project_id: int
    access_key_id: str
    key_created: bool
    stages: dict[str, int] = field(default_factory=dict)  # kind -> CrowdStage id
    queued: list[str] = field(default_factory=list)  # kinds whose launch was queued
    market_url: str = ""
    worker_username: str = WORKER_USERNAME
    worker_password: str = ""  # only when the account was made now
    worker_password_file: str = ""


def marketplace_accounts_ensure(*, owner: str, keep_key: str, balance: Decimal, endpoint: str) -> dict[str, Any]:
    """The marketplace's side, as an operator sets it up: ``manage.py marketplace_demo``.

    Returns its JSON: a public, active requester key for ``owner`` (``keep_key`` while it is
    active, with an empty secret, since the caller holds it) and the demo worker account.
    """
    out = io.StringIO()
    call_command("marketplace_demo", owner, "--worker", WORKER_USERNAME, "--balance", str(balance),
                 "--keep-key", keep_key, "--endpoint-url", endpoint, stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def demo_stage_specs(*, seed: Any) -> list[dict[str, Any]]:
    """One small stage per tool, with the items it works on (None: the stage's default items)."""
    name = seed.category.name
    return [
        dict(kind="categories", stage=Stage.CATEGORIES, name="Demo: which objects?", items=None,
             title="Which kinds of objects are in these photos?",
             description="Tick every kind of object you see in each photo.", max_assignments=3, items_per_hit=5),
        dict(kind="spotting", stage=Stage.SPOTTING, name="Demo: spot the instances",
             items=[[img.pk, seed.category.pk] for img in seed.images[:2]],
             title=f"Click on every {name} in a photo",
             description=f"Put one dot on each {name} you can see.", max_assignments=1, items_per_hit=1),
        dict(kind="segmentation", stage=Stage.SEGMENTATION, name="Demo: outline it", items=[seed.point.pk],
             title=f"Outline the {name} under the dot",
             description="Draw a tight outline around the object marked by the dot.", max_assignments=1,
             items_per_hit=1),
        dict(kind="verification", stage=Stage.VERIFICATION, name="Demo: check the outlines", items=None,
             title="Are these outlines good?",
             description="Say whether each outline fits its object tightly.", max_assignments=1, items_per_hit=5),
        dict(kind="training", stage=Stage.SEGMENTATION, name="Demo: outline training",
             items=[p.pk for p in seed.gold[:2]],
             title="Training: outline objects",
             description="Practice outlining; pass to unlock outlining work.", max_assignments=1, items_per_hit=2),
    ]


def _needs_launch(stage: CrowdStage) -> bool:
    """True unless the stage's HITs are all out (a launch queued earlier may still be waiting)."""
    hits = HIT.objects.filter(stage=stage).exclude(status=HIT.Status.CANCELLED)
    return not hits.exists() or hits.filter(status=HIT.Status.PENDING).exists()


def demo_crowd(*, owner: str, base_url: str | None = None, project_name: str = DEMO_PROJECT,
               balance: Decimal = Decimal("100"), budget: Decimal = Decimal("50"),
               reward: Decimal = REWARD) -> DemoCrowdReport:
    base = (base_url or settings.PUBLIC_BASE_URL).rstrip("/")
    endpoint = base + "/mturk-api/"
    with transaction.atomic():
        project = Project.objects.select_for_update().get(name=project_name, owner__username=owner)
        creds = ProviderCredentials.objects.filter(project=project).first()
        market = marketplace_accounts_ensure(owner=owner, keep_key=creds.access_key_id if creds else "",
                                             balance=balance, endpoint=endpoint)
        key, made = market["aws_access_key_id"], market["made_key"]
        if market["aws_secret_access_key"]:
            if creds is None or creds.access_key_id != key or creds.endpoint_url != endpoint:
                services.credentials_set(project=project, access_key_id=key,
                                         secret_access_key=market["aws_secret_access_key"], endpoint_url=endpoint)
        elif creds.endpoint_url != endpoint:  # the project's own key, still active
            services.credentials_set(project=project, access_key_id=key,
                                     secret_access_key=crypto.decrypt(creds.secret_encrypted), endpoint_url=endpoint)
        if not project.budget_usd:
            Project.objects.filter(pk=project.pk).update(budget_usd=budget)
        seed = demo_seed(project=project)
        report = DemoCrowdReport(project_id=project.pk, access_key_id=key, key_created=made,
                                 market_url=base + "/market/")
        for spec in demo_stage_specs(seed=seed):
            items = spec.pop("items")
            stage, _ = CrowdStage.objects.get_or_create(
                project=project, name=spec.pop("name"),
                defaults=dict(spec, keywords="image,labeling,demo", reward=reward, lifetime_s=LIFETIME_S,
                              assignment_duration_s=1800, auto_approval_delay_s=86400))
            report.stages[stage.kind] = stage.pk
            if _needs_launch(stage):
                tasks.stage_launch.delay_on_commit(stage.pk, items=items)
                report.queued.append(stage.kind)
        report.worker_password = market["worker_password"]
        report.worker_password_file = str(settings.VAR_DIR / "worker-password.txt")
    return report
