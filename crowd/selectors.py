"""Read queries of the crowd layer (costs, what to sync, answers that count)."""
from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from crowd.models import HIT, Assignment, CrowdStage, Payment


def stages_to_sync() -> QuerySet[CrowdStage]:
    """Stages with HITs out at a provider."""
    return CrowdStage.objects.exclude(hit_type_id="").filter(
        hits__status__in=[HIT.Status.PUBLISHED, HIT.Status.REVIEWABLE, HIT.Status.DONE]).distinct()


def hits_to_publish(stage_id: int) -> QuerySet[HIT]:
    return HIT.objects.filter(stage_id=stage_id, status=HIT.Status.PENDING).order_by("id")


def counted_assignments(stage_id: int) -> QuerySet[Assignment]:
    """Answers that count (for aggregation): confirmed by the provider and not rejected."""
    return Assignment.objects.filter(
        hit__stage_id=stage_id, state__in=[Assignment.State.CONFIRMED, Assignment.State.APPROVED],
    ).select_related("worker", "hit")


def project_costs(project_id: int) -> dict[str, Decimal]:
    """Reserved (HITs out), paid rewards and bonuses, and commission, in USD."""
    reserved = HIT.objects.filter(project_id=project_id).exclude(status=HIT.Status.CANCELLED).aggregate(
        s=Sum("cost_reserved"))["s"] or Decimal("0")
    paid = Payment.objects.filter(project_id=project_id, status=Payment.Status.PAID)
    by_kind = {row["kind"]: row for row in paid.values("kind").annotate(a=Sum("amount"), c=Sum("commission"))}
    rewards = by_kind.get("reward", {}).get("a") or Decimal("0")
    bonuses = by_kind.get("bonus", {}).get("a") or Decimal("0")
    commission = sum((row.get("c") or Decimal("0")) for row in by_kind.values())
    return {"reserved": reserved, "rewards": rewards, "bonuses": bonuses, "commission": commission,
            "spent": rewards + bonuses + commission}


def stage_progress(stage_id: int) -> dict[str, int]:
    hits = HIT.objects.filter(stage_id=stage_id).aggregate(
        total=Count("id"), pending=Count("id", filter=Q(status=HIT.Status.PENDING)),
        out=Count("id", filter=Q(status__in=[HIT.Status.PUBLISHED, HIT.Status.REVIEWABLE])),
        disposed=Count("id", filter=Q(status=HIT.Status.DISPOSED)))
    states = dict(Assignment.objects.filter(hit__stage_id=stage_id).values_list("state").annotate(n=Count("id")))
    return {**hits, **{f"assignments_{k}": v for k, v in states.items()}}
