"""Read queries of the crowd layer (costs, what to sync, answers that count)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Avg, Count, Q, QuerySet, Sum

from crowd import seams
from crowd.models import HIT, Assignment, CrowdStage, Payment, PipelineItem, Worker
from datasets.models import Polygon


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


# --- The pipeline page (crowd.admin_pipeline) ----------------------------------------------------

def pipeline_workers(project_id: int) -> list[dict[str, Any]]:
    """Every worker who answered the project's HITs, with the evidence of their quality.

    Per worker: answers stored for the project's HITs, its assignments approved and rejected here,
    gold answers seen and right (``Worker``, all projects: what verification weighs votes by), the
    agreement-based skill (sensitivity, specificity) recorded with the latest category decision
    that used it, and whether the worker is blocked. Workers never synced have no ``Worker`` row
    yet (``pk`` None).
    """
    refs = HIT.objects.filter(project_id=project_id).exclude(task_ref=None).values_list("task_ref", flat=True)
    answers: dict[str, int] = {}
    for rows in seams.answers_for_tasks(list(refs)).values():
        for a in rows:
            if not a.assignment_id.startswith("direct-"):
                answers[a.worker_id] = answers.get(a.worker_id, 0) + 1
    reviewed: dict[str, dict[str, int]] = {}
    for worker, state, n in (Assignment.objects.filter(hit__project_id=project_id, worker__isnull=False)
                             .values_list("worker__provider_worker_id", "state").annotate(n=Count("id"))):
        reviewed.setdefault(worker, {})[state] = n
    skills: dict[str, list[float]] = {}
    decided = (PipelineItem.objects.filter(project_id=project_id, stage__kind="categories", result__isnull=False)
               .order_by("decided_at", "id").values_list("result", flat=True))
    for result in decided.iterator(chunk_size=2000):
        recorded = (result.get("estimates") or {}).get("skills") if isinstance(result, dict) else None
        skills.update(recorded or {})
    names = set(answers) | set(reviewed)
    rows = []
    for w in Worker.objects.filter(provider_worker_id__in=names):
        names.discard(w.provider_worker_id)
        rows.append(_worker_row(w.provider_worker_id, w, answers, reviewed, skills))
    rows += [_worker_row(name, None, answers, reviewed, skills) for name in names]
    return sorted(rows, key=lambda r: r["worker"])


def _worker_row(name: str, w: Any, answers: dict, reviewed: dict, skills: dict) -> dict[str, Any]:
    states = reviewed.get(name, {})
    skill = skills.get(name)
    return {
        "worker": name, "pk": w.pk if w else None, "answers": answers.get(name, 0),
        "approved": states.get(Assignment.State.APPROVED, 0), "rejected": states.get(Assignment.State.REJECTED, 0),
        "gold_seen": w.gold_seen if w else 0, "gold_correct": w.gold_correct if w else 0,
        "gold_accuracy": w.gold_accuracy if w else None,
        "sensitivity": skill[0] if skill else None, "specificity": skill[1] if skill else None,
        "blocked": bool(w and w.blocked), "block_reason": w.block_reason if w else "",
    }


def review_queue(project_id: int, *, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
    """Items waiting for the requester (state REVIEW), oldest first, with every outline drawn for
    the same instance (oldest first; the last is the one that ran out of retries) and each
    attempt's verification votes. Returns (how many wait, the first ``limit``)."""
    waiting = PipelineItem.objects.filter(project_id=project_id, state=PipelineItem.State.REVIEW)
    items = list(waiting.select_related("stage", "image", "category", "polygon").order_by("decided_at", "id")[:limit])
    points = {it.point_id for it in items if it.point_id}
    outlines: dict[int, list[Any]] = {}
    for p in Polygon.objects.filter(point_id__in=points).order_by("id"):
        outlines.setdefault(p.point_id, []).append(p)
    votes: dict[tuple[int, int], list[Any]] = {}
    for v in (PipelineItem.objects.filter(stage_id__in={it.stage_id for it in items}, point_id__in=points)
              .exclude(polygon=None).order_by("attempt", "id")):
        votes.setdefault((v.stage_id, v.point_id), []).append(v)
    out = []
    for it in items:
        drawn = outlines.get(it.point_id, []) if it.point_id else []
        if it.polygon is not None and all(p.pk != it.polygon_id for p in drawn):
            drawn.append(it.polygon)
        out.append({"item": it, "outlines": drawn,
                    "attempts": votes.get((it.stage_id, it.point_id), [it]) if it.point_id else [it]})
    return waiting.count(), out


def _projection(*, spent: Decimal, finished: int, left: int) -> Decimal | None:
    """What the items left should cost at the cost per finished item so far (None: no basis yet)."""
    if not left:
        return Decimal("0.00")
    if finished <= 0 or spent <= 0:
        return None
    return (spent / finished * left).quantize(Decimal("0.01"))


def redundancy_text(stage: CrowdStage) -> str:
    if stage.adaptive:
        return (f"adaptive: at least {stage.min_answers}, stop when {stage.confidence:.0%} sure, "
                f"at most {stage.max_assignments}")
    return f"fixed: {stage.max_assignments} per item"


def pipeline_overview(project: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The pipeline page's numbers: per stage in chain order (``engine.pipeline_progress`` plus
    items decided and left, answers per decided item, the estimate to finish), and the money."""
    from crowd.pipeline.chain import CONSUMES, PRODUCES
    from crowd.pipeline.engine import pipeline_progress

    decided = [PipelineItem.State.DONE, PipelineItem.State.REJECTED, PipelineItem.State.REVIEW,
               PipelineItem.State.REVIEWED]
    answers = dict(PipelineItem.objects.filter(project=project, state__in=decided, answers__gt=0)
                   .values("stage_id").annotate(avg=Avg("answers")).values_list("stage_id", "avg"))
    rows = []
    cent = Decimal("0.01")
    for row in pipeline_progress(project_id=project.pk):
        stage = row["stage"]
        row["spent"] = Decimal(row["spent"]).quantize(cent)
        finished = row["done"] + row["review"] + row["rejected_back"]
        left = row["waiting"] + row["in_progress"]
        total = finished + left
        rows.append({**row, "total": total, "finished": finished, "left": left,
                     "percent": round(100.0 * finished / total) if total else 0,
                     "consumes": CONSUMES.get(stage.kind, ""), "produces": PRODUCES.get(stage.kind, ""),
                     "redundancy": redundancy_text(stage), "answers_per_item": answers.get(stage.pk),
                     "projected": _projection(spent=row["spent"], finished=finished, left=left)})
    costs = {k: Decimal(v).quantize(cent) for k, v in project_costs(project.pk).items()}
    budget = project.budget_usd
    more = [r["projected"] for r in rows if r["left"]]
    projected = costs["spent"] + sum((m for m in more if m is not None), Decimal("0.00"))

    def share(x: Decimal) -> str:
        return f"{min(100.0, 100.0 * float(x / budget)):.2f}" if budget else "0"

    return rows, {**costs, "budget": budget, "assignments": sum(r["assignments"] for r in rows),
                  "spent_width": share(costs["spent"]), "reserved_width": share(costs["reserved"]),
                  "projected": projected, "projected_complete": all(m is not None for m in more),
                  "over_budget": bool(budget) and projected > budget}
