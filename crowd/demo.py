"""The demo on the crowd: the demo project's work for every tool, up as HITs in our marketplace.

``demo_crowd`` does what an operator and a requester would do by hand, once:

1. a marketplace requester key for the owner (``create_requester_key --save --balance --public``,
   or the one already saved in ``VAR_DIR/requester-key.json`` / on the project);
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

This is operator setup, like the management commands it calls, so it may touch the marketplace's
models (keys, the worker account); publishing and paying go through ``crowd.tasks`` only.
"""
from __future__ import annotations

import io
import json
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
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


def _key_path():
    return settings.VAR_DIR / "requester-key.json"


def _active_key(*, owner: str, access_key_id: str) -> bool:
    from crowd.marketplace.models import RequesterKey

    return RequesterKey.objects.filter(access_key_id=access_key_id, is_active=True,
                                       account__user__username=owner).exists()


def requester_key_ensure(*, owner: str, project: Project, balance: Decimal) -> tuple[str, str, bool]:
    """(access key id, secret, made now): the project's key, else the saved one, else a new one."""
    creds = ProviderCredentials.objects.filter(project=project).first()
    if creds is not None and _active_key(owner=owner, access_key_id=creds.access_key_id):
        return creds.access_key_id, crypto.decrypt(creds.secret_encrypted), False
    path = _key_path()
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("username") == owner and _active_key(owner=owner, access_key_id=saved["aws_access_key_id"]):
            return saved["aws_access_key_id"], saved["aws_secret_access_key"], False
    out = io.StringIO()
    call_command("create_requester_key", owner, "--save", "--public", "--balance", str(balance),
                 stdout=out, stderr=io.StringIO())
    key = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", out.getvalue())[1]
    secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", out.getvalue())[1]
    return key, secret, True


def _requester_public(*, owner: str) -> None:
    from crowd.marketplace.models import RequesterAccount

    RequesterAccount.objects.filter(user__username=owner, is_public=False).update(is_public=True)


def worker_account_ensure(*, owner: str, username: str = WORKER_USERNAME) -> tuple[str, bool]:
    """Make the demo worker once (in the owner's crowd); return (password or "", made now)."""
    from crowd.marketplace import services as market

    if get_user_model().objects.filter(username=username).exists():
        return "", False
    password = secrets.token_urlsafe(12)
    owner_user = get_user_model().objects.get(username=owner)
    invite = market.worker_invite_create(account=market.requester_account_for(user=owner_user), uses=1)
    market.worker_sign_up(username=username, password=password, invite_code=invite.code)
    path = settings.VAR_DIR / "worker-password.txt"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password, True


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
        key, secret, made = requester_key_ensure(owner=owner, project=project, balance=balance)
        _requester_public(owner=owner)
        creds = ProviderCredentials.objects.filter(project=project).first()
        if creds is None or creds.access_key_id != key or creds.endpoint_url != endpoint:
            services.credentials_set(project=project, access_key_id=key, secret_access_key=secret,
                                     endpoint_url=endpoint)
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
        password, _ = worker_account_ensure(owner=owner)
        report.worker_password = password
        report.worker_password_file = str(settings.VAR_DIR / "worker-password.txt")
    return report
