"""Celery tasks of the crowd layer: thin, take ids, idempotent (so ``acks_late``), retried.

Transient provider errors (throttling, 5xx, lost connections that botocore's own retries did
not get past) are retried by Celery with exponential backoff and jitter. Every task can run
twice, or be killed at any line and run again: see ``crowd.services`` for why nothing is
published or paid twice.
"""
from __future__ import annotations

from celery import shared_task

from crowd import selectors, services
from crowd.models import HIT, CrowdStage
from crowd.providers.base import TransientProviderError

RETRY = {
    "autoretry_for": (TransientProviderError,),
    "retry_backoff": 5,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 12,
    "acks_late": True,
    "reject_on_worker_lost": True,
}


@shared_task(name="crowd.stage_launch", **RETRY)
def stage_launch(stage_id: int, items: list | None = None) -> dict:
    """Plan and publish a stage; ``items`` (JSON: ids or [image, category] pairs) default to the
    stage's own (the project's images, or outlines waiting for verification)."""
    if not CrowdStage.objects.filter(pk=stage_id).exists():
        return {}
    plan, published = services.stage_launch(stage_id=stage_id, items=items)
    return {"planned": len(plan.created), "published": published.published,
            "stopped_by_budget": plan.stopped_by_budget, "stopped_by_balance": published.stopped_by_balance}


@shared_task(name="crowd.stage_publish", **RETRY)
def stage_publish(stage_id: int) -> int:
    if not CrowdStage.objects.filter(pk=stage_id).exists():
        return 0
    return services.stage_publish(stage_id=stage_id).published


@shared_task(name="crowd.hit_publish", **RETRY)
def hit_publish(hit_id: int) -> str:
    hit = services.hit_publish(hit_id=hit_id)
    return (hit.provider_hit_id or "") if hit else ""


@shared_task(name="crowd.sync_all", acks_late=True)
def sync_all() -> int:
    """Beat: queue one sync per stage with HITs out."""
    ids = list(selectors.stages_to_sync().values_list("pk", flat=True))
    for pk in ids:
        stage_sync.delay_on_commit(pk)
    return len(ids)


@shared_task(name="crowd.stage_sync", **RETRY)
def stage_sync(stage_id: int) -> dict:
    return vars(services.stage_sync(stage_id=stage_id))


@shared_task(name="crowd.hit_sync", **RETRY)
def hit_sync(hit_id: int) -> dict:
    if not HIT.objects.filter(pk=hit_id).exists():
        return {}
    return vars(services.hit_sync(hit_id=hit_id))


@shared_task(name="crowd.answers_collect", **RETRY)
def answers_collect() -> int:
    return services.answers_collect()


@shared_task(name="crowd.training_grants", **RETRY)
def training_grants() -> int:
    return services.training_grants()


@shared_task(name="crowd.bonus_pay", **RETRY)
def bonus_pay(payment_id: int) -> str:
    return services.bonus_pay(payment_id=payment_id).status


# --- The pipeline -------------------------------------------------------------------------------

@shared_task(name="crowd.pipeline_launch", **RETRY)
def pipeline_launch(project_id: int, entry_stage_id: int | None = None) -> dict:
    from crowd.pipeline import engine

    return engine.pipeline_launch(project_id=project_id, entry_stage_id=entry_stage_id)


@shared_task(name="crowd.pipeline_answer", **RETRY)
def pipeline_answer(task_ref: int) -> dict:
    """An answer was stored for a task item: decide the items of its HIT, move them on."""
    from crowd.pipeline import engine

    hit_id = engine.hit_for_task(task_ref)
    if hit_id is None:
        return {}
    report = engine.items_advance(hit_id=hit_id)
    return {"checked": report.checked, "finished": report.finished, "published": report.published}


@shared_task(name="crowd.pipeline_publish", **RETRY)
def pipeline_publish(stage_id: int) -> dict:
    from crowd.pipeline import engine

    if not CrowdStage.objects.filter(pk=stage_id).exists():
        return {}
    return engine.items_publish(stage_id=stage_id)


@shared_task(name="crowd.pipeline_catch_up", **RETRY)
def pipeline_catch_up() -> dict:
    from crowd.pipeline import engine

    return engine.pipeline_catch_up()
