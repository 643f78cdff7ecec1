"""The pipeline's services: put items up, read their answers, move each one on exactly once.

An item (``PipelineItem``) is made once per stage and key (unique constraint); ``items_publish``
puts the waiting ones up as HITs (through ``crowd.services.stage_launch``: budget, balance and
UniqueRequestToken rules apply); ``items_advance`` reads the answers our server stored for the
items' HITs, asks ``decide`` whether each item is finished, and if so moves it on in one
transaction: one conditional update (ACTIVE -> DONE / REJECTED / REVIEW) that only one caller
can win, the aggregated records, and the next stage's items. Two Celery workers advancing the
same item at once therefore produce its results and its successors once.

Answers that do not count: from assignments the provider did not know (INVALID) or whose work
was rejected, from blocked workers, from signed-in users outside any HIT, and a worker's second
answer to the same item.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q

from crowd import clock, seams
from crowd.models import HIT, Assignment, CrowdStage, PipelineItem, Worker
from crowd.pipeline import decide
from crowd.pipeline.chain import chain_of, redraw_stage
from crowd.providers.base import ProviderError, TransientProviderError
from datasets.models import Category, Image, ImageLabel, InstancePoint, Polygon, Stage

log = logging.getLogger(__name__)
AGGREGATE = "aggregate"
_DONE_HIT = (HIT.Status.DISPOSED, HIT.Status.CANCELLED, HIT.Status.EXPIRED)


def item_key(item: Any) -> str:
    """The key of one HIT item, as ``crowd.services`` writes ``HIT.item_key``."""
    return "-".join(str(x) for x in item) if isinstance(item, (list, tuple)) else str(item)


def stage_rule(stage: CrowdStage) -> decide.Rule:
    return decide.Rule(redundancy=stage.max_assignments, adaptive=stage.adaptive, min_answers=stage.min_answers,
                       confidence=stage.confidence, aggregation=stage.aggregation,
                       cluster_min_workers=stage.cluster_min_workers)


# --- Making and publishing items -------------------------------------------------------------

def _spec(kind: str, *, image: int, category: int | None = None, point: int | None = None,
          polygon: int | None = None, attempt: int = 1, parent: int | None = None) -> dict[str, Any]:
    item: Any = {"categories": image, "spotting": [image, category], "segmentation": [point, attempt],
                 "verification": polygon}[kind]
    return dict(key=item_key(item), item=item, image_id=image, category_id=category, point_id=point,
                polygon_id=polygon, attempt=attempt, parent_id=parent)


def items_add(*, stage: CrowdStage, specs: Iterable[dict[str, Any]]) -> int:
    """Make the stage's items (WAITING); an item already made is left as it is."""
    rows = [PipelineItem(stage=stage, project_id=stage.project_id, **s) for s in specs]
    before = PipelineItem.objects.filter(stage=stage).count()
    PipelineItem.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return PipelineItem.objects.filter(stage=stage).count() - before


def entry_specs(stage: CrowdStage) -> list[dict[str, Any]]:
    """What an entry stage starts from: every image, or what the requester already knows."""
    project = stage.project_id
    outside = [Stage.IMPORT, Stage.REQUESTER]
    if stage.kind == "categories":
        return [_spec("categories", image=i) for i in
                Image.objects.filter(project_id=project).order_by("id").values_list("id", flat=True)]
    if stage.kind == "spotting":
        pairs = (ImageLabel.objects.filter(image__project_id=project, present=True, stage__in=outside)
                 .values_list("image_id", "category_id").distinct().order_by("image_id", "category_id"))
        return [_spec("spotting", image=i, category=c) for i, c in pairs]
    if stage.kind == "segmentation":
        points = (InstancePoint.objects.filter(image__project_id=project, stage__in=outside)
                  .values_list("id", "image_id", "category_id").order_by("id"))
        return [_spec("segmentation", image=i, category=c, point=p) for p, i, c in points]
    polygons = (Polygon.objects.filter(image__project_id=project, status=Polygon.Status.PENDING)
                .values_list("id", "image_id", "category_id").order_by("id"))
    return [_spec("verification", image=i, category=c, polygon=p) for p, i, c in polygons]


def pipeline_launch(*, project_id: int, entry_stage_id: int | None = None) -> dict[str, Any]:
    """Make the entry stage's items (new images too, when run again) and put them up."""
    chain = chain_of(project_id)
    if not chain:
        raise ValueError("This project has no pipeline stages: configure them first.")
    entry = next((s for s in chain if s.pk == entry_stage_id), chain[0]) if entry_stage_id else chain[0]
    added = items_add(stage=entry, specs=entry_specs(entry))
    published = items_publish(stage_id=entry.pk)
    return {"stage": entry.pk, "added": added, **published}


def items_link(*, stage: CrowdStage) -> int:
    """Attach WAITING items to the stage's HITs that carry them (made now or by an earlier run)."""
    waiting = dict(PipelineItem.objects.filter(stage=stage, state=PipelineItem.State.WAITING)
                   .values_list("key", "pk"))
    if not waiting:
        return 0
    linked = 0
    for hit_id, items in (HIT.objects.filter(stage=stage).exclude(status=HIT.Status.CANCELLED)
                          .values_list("pk", "items")):
        keys = [item_key(i) for i in items if item_key(i) in waiting]
        if keys:
            linked += PipelineItem.objects.filter(stage=stage, key__in=keys, state=PipelineItem.State.WAITING).update(
                hit_id=hit_id, state=PipelineItem.State.ACTIVE)
    return linked


def items_publish(*, stage_id: int) -> dict[str, int]:
    """Put the stage's waiting items up now (a stage never waits for a full batch)."""
    from crowd import services  # the crowd services use the pipeline only through tasks

    stage = CrowdStage.objects.select_related("project").get(pk=stage_id)
    items_link(stage=stage)
    waiting = list(PipelineItem.objects.filter(stage=stage, state=PipelineItem.State.WAITING)
                   .order_by("id").values_list("item", flat=True))
    if not waiting:
        if HIT.objects.filter(stage=stage, status=HIT.Status.PENDING).exists():
            # Planned by a run that died before CreateHIT answered: the same token again.
            return {"planned": 0, "published": services.stage_publish(stage_id=stage.pk).published, "waiting": 0}
        return {"planned": 0, "published": 0, "waiting": 0}
    plan, published = services.stage_launch(stage_id=stage.pk, items=waiting)
    items_link(stage=stage)
    left = PipelineItem.objects.filter(stage=stage, state=PipelineItem.State.WAITING).count()
    return {"planned": len(plan.created), "published": published.published, "waiting": left}


# --- Reading answers -------------------------------------------------------------------------

@dataclass
class ItemAnswers:
    """One item's answers that count, oldest first: (answer id, worker, the part about this item)."""

    rows: list[tuple[int, str, Any]] = field(default_factory=list)

    @property
    def workers(self) -> list[str]:
        return [w for _, w, _ in self.rows]


def _not_counted(assignment_ids: list[str]) -> set[str]:
    bad = Assignment.objects.filter(provider_assignment_id__in=assignment_ids).filter(
        Q(state__in=[Assignment.State.INVALID, Assignment.State.REJECTED]) | Q(worker__blocked=True))
    return set(bad.values_list("provider_assignment_id", flat=True))


def _blocked(worker_ids: Iterable[str]) -> set[str]:
    return set(Worker.objects.filter(provider_worker_id__in=set(worker_ids), blocked=True)
               .values_list("provider_worker_id", flat=True))


def _part(kind: str, item: PipelineItem, answer: dict, polygons: dict[str, int]) -> Any:
    """The part of one stored answer about ``item`` (None if it says nothing about it)."""
    if kind == "categories":
        for entry in answer.get("images", []):
            if entry.get("image") == item.image_id:
                return set(entry.get("present", []))
        return None
    if kind == "spotting":
        return [(p["x"], p["y"]) for p in answer.get("points", [])], bool(answer.get("crowd"))
    if kind == "segmentation":
        return None  # filled from the Polygon records by the caller
    for d in answer.get("decisions", []):
        if d.get("polygon") == item.polygon_id:
            return bool(d.get("accept"))
    return None


def answers_for(items: list[PipelineItem]) -> dict[int, ItemAnswers]:
    """The counted answers of each item, from its HIT's stored answers (a few queries in all)."""
    hits = {it.hit_id for it in items if it.hit_id}
    refs = dict(HIT.objects.filter(pk__in=hits).values_list("pk", "task_ref"))
    stored = seams.answers_for_tasks(refs.values())
    all_ids = [a.assignment_id for rows in stored.values() for a in rows]
    skip = _not_counted(all_ids) | {a for a in all_ids if a.startswith("direct-")}
    blocked = _blocked(a.worker_id for rows in stored.values() for a in rows)
    polygons: dict[str, int] = {}
    if any(it.stage.kind == "segmentation" for it in items):
        polygons = dict(Polygon.objects.filter(assignment_ref__in=all_ids, stage=Stage.SEGMENTATION)
                        .values_list("assignment_ref", "pk"))
    out: dict[int, ItemAnswers] = {}
    for it in items:
        got = ItemAnswers()
        seen: set[str] = set()
        for a in stored.get(refs.get(it.hit_id), []):
            if a.assignment_id in skip or a.worker_id in blocked or a.worker_id in seen:
                continue
            part = polygons.get(a.assignment_id) if it.stage.kind == "segmentation" else \
                _part(it.stage.kind, it, a.answer if isinstance(a.answer, dict) else {}, polygons)
            if part is None:
                continue
            seen.add(a.worker_id)
            got.rows.append((a.id, a.worker_id, part))
        out[it.pk] = got
    return out


# --- Worker estimates the decisions use ------------------------------------------------------

def category_skills(stage: CrowdStage) -> tuple[dict[str, decide.Skill], float]:
    """Sensitivity and specificity per worker by Dawid-Skene over the stage's answers so far;
    kept in the cache for ``PIPELINE_SKILL_SECONDS`` (a refit costs O(answers))."""
    key = f"pipeline:skills:{stage.pk}"
    cached = cache.get(key)
    if cached is not None:
        skills, presence = cached
        return {w: decide.Skill(*v) for w, v in skills.items()}, presence
    refs = list(HIT.objects.filter(stage=stage).exclude(task_ref=None).values_list("task_ref", flat=True))
    stored = seams.answers_for_tasks(refs)
    ids = [a.assignment_id for rows in stored.values() for a in rows]
    skip = _not_counted(ids)
    rows = []
    for answers in stored.values():
        for a in answers:
            if a.assignment_id in skip or a.assignment_id.startswith("direct-") or not isinstance(a.answer, dict):
                continue
            for entry in a.answer.get("images", []):
                rows.append((a.worker_id, entry.get("image"), set(entry.get("present", []))))
    categories = list(Category.objects.filter(project_id=stage.project_id).order_by("id").values_list("id", flat=True))
    skills, presence = decide.category_skills(rows, categories)
    if not skills:
        return skills, presence  # too few workers yet: refit on the next answer, not in 30 s
    cache.set(key, ({w: (s.sensitivity, s.specificity) for w, s in skills.items()}, presence),
              settings.PIPELINE_SKILL_SECONDS)
    return skills, presence


def verification_accuracies(workers: Iterable[str]) -> dict[str, float]:
    """Accuracy on gold outlines, for workers with at least 3 gold answers."""
    return {w.provider_worker_id: w.gold_correct / w.gold_seen
            for w in Worker.objects.filter(provider_worker_id__in=set(workers), gold_seen__gte=3)}


# --- Deciding and moving on ------------------------------------------------------------------

def item_decide(item: PipelineItem, answers: ItemAnswers, *, force: bool = False,
                estimates: dict[str, Any] | None = None) -> tuple[decide.Decision, dict[str, Any]]:
    """The decision for one item from its answers; ``force`` decides with what there is (the HIT
    is over). Returns the decision and the worker estimates it used (kept with the item, so
    ``pipeline_recompute`` replays it exactly)."""
    stage = item.stage
    rule = stage_rule(stage)
    n = len(answers.rows)
    if force:
        rule = dataclasses.replace(rule, redundancy=max(n, 1), min_answers=min(rule.min_answers, max(n, 1)))
    used: dict[str, Any] = {}
    if stage.kind == "categories":
        categories = sorted(Category.objects.filter(project_id=stage.project_id).values_list("id", flat=True))
        if estimates is None:
            skills, presence = category_skills(stage) if (stage.adaptive or stage.aggregation == "ds") else ({}, 0.1)
            used = {"presence": presence,
                    "skills": {w: [round(skills[w].sensitivity, 6), round(skills[w].specificity, 6)]
                               for w in answers.workers if w in skills}}
        else:
            used = estimates
        skills = {w: decide.Skill(*v) for w, v in used.get("skills", {}).items()}
        votes = [(w, part) for _, w, part in answers.rows]
        return decide.categories_decide(votes, categories, rule, skills, used.get("presence", 0.1)), used
    if stage.kind == "spotting":
        image = item.image
        rows = [(w, pts, crowd) for _, w, (pts, crowd) in answers.rows]
        return decide.spotting_decide(rows, width=image.width, height=image.height, rule=rule), used
    if stage.kind == "segmentation":
        return decide.segmentation_decide([(w, p) for _, w, p in answers.rows], rule), used
    used = estimates if estimates is not None else {"accuracy": verification_accuracies(answers.workers)}
    return decide.verification_decide([(w, v) for _, w, v in answers.rows], rule, used.get("accuracy")), used


@dataclass
class AdvanceReport:
    checked: int = 0
    finished: int = 0
    published: dict[int, int] = field(default_factory=dict)
    hits_stopped: int = 0
    hits_grown: int = 0


def _finish(item: PipelineItem, d: decide.Decision, answers: ItemAnswers, used: dict[str, Any]) -> set[int]:
    """Move one item on (if this caller wins the update); returns the stages that got new items."""
    stage = item.stage
    touched: set[int] = set()
    state = PipelineItem.State.DONE
    next_specs: list[dict[str, Any]] = []
    next_stage = stage.feeds
    redo_stage = None
    if stage.kind == "verification" and not d.result["accept"]:
        redo_stage = redraw_stage(stage)
        state = PipelineItem.State.REJECTED if (redo_stage and item.attempt <= stage.max_retries) \
            else PipelineItem.State.REVIEW
    result = dict(d.result) if isinstance(d.result, dict) else {"present": d.result}
    result.update(d.extra)
    if used:
        result["estimates"] = used
    with transaction.atomic():
        won = PipelineItem.objects.filter(pk=item.pk, state=PipelineItem.State.ACTIVE).update(
            state=state, result=result, confidence=d.confidence, reason=d.reason[:300],
            answers=len(answers.rows), answer_ids=[i for i, _, _ in answers.rows], decided_at=clock.now())
        if not won:
            return touched
        who = {"made_by": AGGREGATE, "stage": Stage.AGGREGATE}
        if stage.kind == "categories":
            present = set(d.result)
            posterior = d.extra.get("posterior", {})
            ImageLabel.objects.bulk_create(
                ImageLabel(image_id=item.image_id, category_id=c, present=c in present,
                           confidence=posterior.get(str(c)), **who)
                for c in sorted(int(k) for k in posterior) or sorted(present))
            if next_stage and next_stage.kind == "spotting":
                next_specs = [_spec("spotting", image=item.image_id, category=c, parent=item.pk) for c in sorted(present)]
        elif stage.kind == "spotting":
            points = []
            instances = d.result["instances"]
            if d.result["crowd"] and instances:
                xs = [p[0] for p in instances]
                ys = [p[1] for p in instances]
                instances = [[sum(xs) / len(xs), sum(ys) / len(ys), max(p[2] for p in d.result["instances"])]]
            for x, y, k in instances:
                points.append(InstancePoint.objects.create(
                    image_id=item.image_id, category_id=item.category_id, x=x, y=y, is_crowd=d.result["crowd"],
                    confidence=k / max(len(answers.rows), 1), **who))
            if next_stage and next_stage.kind == "segmentation":
                next_specs = [_spec("segmentation", image=item.image_id, category=item.category_id, point=p.pk,
                                    parent=item.pk) for p in points]
        elif stage.kind == "segmentation":
            polygon = d.result["polygon"]
            if next_stage and next_stage.kind == "verification":
                next_specs = [_spec("verification", image=item.image_id, category=item.category_id, polygon=polygon,
                                    point=item.point_id, attempt=item.attempt, parent=item.pk)]
        else:
            Polygon.objects.filter(pk=item.polygon_id).update(
                status=Polygon.Status.ACCEPTED if d.result["accept"] else Polygon.Status.REJECTED,
                confidence=d.confidence)
            if state == PipelineItem.State.REJECTED:
                next_stage = redo_stage
                next_specs = [_spec("segmentation", image=item.image_id, category=item.category_id,
                                    point=item.point_id, attempt=item.attempt + 1, parent=item.pk)]
            else:
                next_stage = None
        if next_stage and next_specs:
            items_add(stage=next_stage, specs=next_specs)
            touched.add(next_stage.pk)
    return touched


def _stop_finished_hits(hit_ids: set[int]) -> int:
    """Expire HITs whose items are all decided, so nobody takes an answer we no longer need."""
    from crowd import services

    stopped = 0
    open_items = set(PipelineItem.objects.filter(hit_id__in=hit_ids, state=PipelineItem.State.ACTIVE)
                     .values_list("hit_id", flat=True))
    for hit in HIT.objects.filter(pk__in=hit_ids - open_items, status__in=[HIT.Status.PUBLISHED, HIT.Status.REVIEWABLE]):
        if hit.expires_at and hit.expires_at <= clock.now():
            continue
        done = hit.assignments.filter(state__in=[Assignment.State.APPROVED, Assignment.State.REJECTED,
                                                 Assignment.State.CONFIRMED]).count()
        if done >= hit.max_assignments:
            continue
        try:
            services.hit_expire(hit_id=hit.pk)
            stopped += 1
        except TransientProviderError:
            raise
        except ProviderError as exc:  # the sync will find it; nothing is lost by not stopping early
            log.warning("could not stop HIT %s early: %s", hit.pk, exc)
    return stopped


def _slots_used(hits: Iterable[HIT]) -> dict[int, int]:
    """How many of each HIT's assignments have answered (rejected or not counted ones too: on
    MTurk they keep their slot). Answers from outside any HIT (``direct-``) are no slot."""
    refs = {h.pk: h.task_ref for h in hits}
    stored = seams.answers_for_tasks(refs.values())
    return {pk: len({a.assignment_id for a in stored.get(ref, []) if not a.assignment_id.startswith("direct-")})
            for pk, ref in refs.items()}


def _grow_unsure_hits(unsure: dict[int, int]) -> int:
    """Adaptive redundancy, MTurk's way: a HIT is published with ``min_answers`` assignments; once
    they have all answered and some of its items are still unsure, it gets as many more as its
    neediest item lacks (usually 1), up to the stage's cap. ``unsure``: HIT id -> answers wanted.

    A retried or concurrent run asks for the same new total with the same token, so a HIT is
    extended once; a HIT whose slots are not all answered yet waits for its workers."""
    from crowd import services

    grown = 0
    hits = list(HIT.objects.filter(pk__in=unsure, status__in=[HIT.Status.PUBLISHED, HIT.Status.REVIEWABLE,
                                                             HIT.Status.DONE]).select_related("stage"))
    hits = [h for h in hits if services.hit_may_grow(h)]
    used = _slots_used(hits)
    for hit in hits:
        if used[hit.pk] < hit.max_assignments:
            continue  # workers still hold (or may take) its slots
        number = min(unsure[hit.pk], services.hit_assignment_cap(hit) - hit.max_assignments)
        try:
            services.hit_add_assignments(hit_id=hit.pk, number=number, from_total=hit.max_assignments)
            grown += 1
        except TransientProviderError:
            raise  # the task is retried; the token keeps the retry from extending twice
        except (ProviderError, services.CrowdError) as exc:
            # Refused for good (no funds, budget): the items are decided when the HIT ends.
            log.warning("could not add assignments to HIT %s: %s", hit.pk, exc)
            HIT.objects.filter(pk=hit.pk).update(status_reason=str(exc)[:300])
    return grown


def items_advance(*, stage_id: int | None = None, hit_id: int | None = None, item_ids: list[int] | None = None,
                  force_finished_hits: bool = False, publish: bool = True) -> AdvanceReport:
    """Decide every ACTIVE item selected (by stage, HIT or ids) whose answers allow it."""
    report = AdvanceReport()
    qs = PipelineItem.objects.filter(state=PipelineItem.State.ACTIVE).select_related("stage__feeds", "image", "hit")
    if stage_id is not None:
        qs = qs.filter(stage_id=stage_id)
    if hit_id is not None:
        qs = qs.filter(hit_id=hit_id)
    if item_ids is not None:
        qs = qs.filter(pk__in=item_ids)
    items = list(qs.order_by("id")[:settings.PIPELINE_ADVANCE_BATCH])
    if not items:
        return report
    answers = answers_for(items)
    touched: set[int] = set()
    hits: set[int] = set()
    unsure: dict[int, int] = {}  # adaptive HITs with undecided items -> answers the neediest lacks
    now = clock.now()
    for item in items:
        report.checked += 1
        got = answers[item.pk]
        hit = item.hit
        over = hit is not None and (hit.status in _DONE_HIT or (hit.expires_at is not None and hit.expires_at <= now
                                                                and not hit.assignments.filter(
                                                                    state=Assignment.State.PENDING).exists()))
        force = force_finished_hits and over
        if force and not got.rows:
            PipelineItem.objects.filter(pk=item.pk, state=PipelineItem.State.ACTIVE).update(
                state=PipelineItem.State.REVIEW, reason="No answer came before the HIT ended.", decided_at=now)
            report.finished += 1
            continue
        d, used = item_decide(item, got, force=force)
        if d.finished:
            touched |= _finish(item, d, got, used)
            report.finished += 1
            if item.hit_id:
                hits.add(item.hit_id)
        else:
            if d.reason and d.reason != item.reason:
                PipelineItem.objects.filter(pk=item.pk, state=PipelineItem.State.ACTIVE).update(
                    reason=d.reason[:300], confidence=d.confidence)
            if item.stage.adaptive and hit is not None and not over:
                lack = max(stage_rule(item.stage).need - len(got.rows), 1)
                unsure[hit.pk] = max(unsure.get(hit.pk, 0), lack)
    if hits:
        report.hits_stopped = _stop_finished_hits(hits)
    lost: TransientProviderError | None = None
    if unsure:
        try:
            report.hits_grown = _grow_unsure_hits(unsure)
        except TransientProviderError as exc:
            lost = exc  # raised after publishing: a retried task would not find these successors
    if publish:
        for sid in sorted(touched):
            report.published[sid] = items_publish(stage_id=sid)["published"]
    if lost is not None:
        raise lost
    return report


def hit_for_task(task_ref: int) -> int | None:
    return HIT.objects.filter(task_ref=task_ref).values_list("pk", flat=True).first()


def pipeline_catch_up(*, project_id: int | None = None) -> dict[str, int]:
    """What the beat does: decide what the answers allow, close items whose HIT ended, and put up
    what waits (new images of a launched entry stage too). Converges after any crash."""
    stages = CrowdStage.objects.filter(items__isnull=False).distinct()
    if project_id is not None:
        stages = stages.filter(project_id=project_id)
    out = {"finished": 0, "published": 0}
    for stage in stages.order_by("id"):
        r = items_advance(stage_id=stage.pk, force_finished_hits=True)
        out["finished"] += r.finished
        if PipelineItem.objects.filter(stage=stage, state=PipelineItem.State.WAITING).exists() or \
                HIT.objects.filter(stage=stage, status=HIT.Status.PENDING).exists():
            out["published"] += items_publish(stage_id=stage.pk)["published"]
    return out


# --- The requester's review queue ------------------------------------------------------------

def review_resolve(*, item_id: int, accept: bool, note: str = "") -> PipelineItem:
    """The requester's verdict on an outline that ran out of retries."""
    with transaction.atomic():
        item = PipelineItem.objects.select_for_update().get(pk=item_id)
        if item.state != PipelineItem.State.REVIEW:
            return item
        if item.polygon_id:
            Polygon.objects.filter(pk=item.polygon_id).update(
                status=Polygon.Status.ACCEPTED if accept else Polygon.Status.REJECTED)
        result = dict(item.result or {})
        result["review"] = {"accept": accept, "note": note[:300]}
        PipelineItem.objects.filter(pk=item.pk).update(state=PipelineItem.State.REVIEWED, result=result)
        item.refresh_from_db()
        return item


# --- Recompute ----------------------------------------------------------------------------------

@dataclass
class RecomputeReport:
    items: int = 0
    same: int = 0
    changed: list[dict[str, Any]] = field(default_factory=list)


def pipeline_recompute(*, project_id: int) -> RecomputeReport:
    """Replay every decided item from the stored answers it was decided on, with the worker
    estimates recorded with it, and list any item whose result differs."""
    report = RecomputeReport()
    decided = [PipelineItem.State.DONE, PipelineItem.State.REJECTED, PipelineItem.State.REVIEW,
               PipelineItem.State.REVIEWED]
    items = list(PipelineItem.objects.filter(project_id=project_id, state__in=decided)
                 .exclude(answers=0).select_related("stage__feeds", "image", "hit").order_by("id"))
    by_stage: dict[int, list[PipelineItem]] = defaultdict(list)
    for it in items:
        by_stage[it.stage_id].append(it)
    for group in by_stage.values():
        answers = answers_for(group)
        for it in group:
            report.items += 1
            got = answers[it.pk]
            got.rows = [r for r in got.rows if r[0] in set(it.answer_ids)]
            estimates = (it.result or {}).get("estimates", {})
            d, _ = item_decide(it, got, force=True, estimates=estimates)
            fresh = dict(d.result) if isinstance(d.result, dict) else {"present": d.result}
            old = {k: v for k, v in (it.result or {}).items() if k in fresh}
            if d.finished and _same(old, fresh):
                report.same += 1
            else:
                report.changed.append({"item": it.pk, "stage": it.stage.kind, "stored": old, "recomputed": fresh})
    return report


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(a[k] == b[k] for k in a)


# --- What the requester sees --------------------------------------------------------------------

def pipeline_progress(*, project_id: int) -> list[dict[str, Any]]:
    """Per stage: items by state, assignments and money, for the admin and the API."""
    from crowd.models import Payment

    rows = []
    for stage in chain_of(project_id):
        counts = dict(PipelineItem.objects.filter(stage=stage).values_list("state").annotate(n=Count("id")))
        hits = HIT.objects.filter(stage=stage).exclude(status=HIT.Status.CANCELLED)
        assignments = Assignment.objects.filter(hit__stage=stage).exclude(state=Assignment.State.INVALID)
        paid = Payment.objects.filter(assignment__hit__stage=stage, status=Payment.Status.PAID)
        spent = sum((p.amount + p.commission for p in paid), start=type(stage.reward)("0"))
        rows.append({
            "stage": stage, "waiting": counts.get("waiting", 0), "in_progress": counts.get("active", 0),
            "done": counts.get("done", 0) + counts.get("reviewed", 0), "rejected_back": counts.get("rejected", 0),
            "review": counts.get("review", 0), "hits": hits.count(), "assignments": assignments.count(),
            "spent": spent,
        })
    return rows
