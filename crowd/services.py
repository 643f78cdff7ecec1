"""What the crowd layer does: plan and publish HITs, sync and review assignments, pay workers.

Every function that talks to a provider is safe to run again after a crash at any line:

- a HIT row (with its UniqueRequestToken) exists before CreateHIT is called, so a repeat sends
  the same token; the provider answers "already exists" with the HIT id, and we look it up;
- an assignment's decision is written before ApproveAssignment / RejectAssignment; a repeat
  sends the same decision, and "wrong state" is answered by GetAssignment (it was done);
- a bonus ``Payment`` row (with its token) exists before SendBonus; a repeat sends the same
  token and the provider refuses to pay it twice;
- state changes are conditional updates (``filter(state=...).update(...)``), so two workers
  running the same sync count a worker's approval once.

Provider calls go through ``crowd.providers`` only; ``provider`` arguments let a caller reuse
one client for a batch.
"""
from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum

from crowd import clock, crypto, rules, seams
from crowd.answers import AnswerXMLError, check_task_url, external_question_xml, parse_answer_xml
from crowd.models import (
    HIT,
    QUAL_APPROVAL_RATE,
    QUAL_APPROVED_HITS,
    QUAL_LOCALE,
    Assignment,
    CrowdStage,
    Payment,
    PipelineItem,
    ProviderCredentials,
    TrainingQualification,
    Worker,
    WorkerQualification,
)
from crowd.providers import provider_for
from crowd.providers.base import (
    Agent,
    AlreadyExists,
    CrowdProvider,
    InvalidState,
    NotFound,
    ProviderError,
    Requirement,
    TransientProviderError,
    UnitType,
)
from datasets.models import Image, Polygon, Project

log = logging.getLogger(__name__)
CENT = Decimal("0.01")
TOKEN_LIFETIME = timedelta(hours=23)  # MTurk keeps a UniqueRequestToken for 24 hours
SYNC_BATCH = 500  # reviewable HITs looked up in our database at a time


class CrowdError(ValueError):
    """A request the crowd layer cannot carry out, with a message for the requester."""


# --- Money -----------------------------------------------------------------------------------

def _cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def commission_rate(max_assignments: int) -> Decimal:
    """MTurk's fee: 20% of rewards and bonuses; 40% for HITs with 10 or more assignments."""
    return Decimal("0.40") if max_assignments >= 10 else Decimal("0.20")


def fee_for(amount: Decimal, max_assignments: int) -> Decimal:
    """The fee on one payment (a reward or a bonus): at least one cent."""
    return max(CENT, _cents(Decimal(amount) * commission_rate(max_assignments)))


def hit_cost(*, reward: Decimal, max_assignments: int, bonus: Decimal = Decimal("0")) -> Decimal:
    """The most one HIT can cost: every assignment paid and, if the stage pays one, bonused."""
    per = Decimal(reward) + fee_for(reward, max_assignments)
    if bonus and bonus > 0:
        per += Decimal(bonus) + fee_for(bonus, max_assignments)
    return _cents(per * max_assignments)


@dataclass
class Estimate:
    items: int
    hits: int
    assignments: int
    rewards: Decimal
    commission: Decimal
    bonuses: Decimal
    total: Decimal
    budget: Decimal
    reserved: Decimal
    fits: int  # how many of the HITs fit in what is left of the budget

    @property
    def remaining(self) -> Decimal:
        return self.budget - self.reserved


def hit_first_assignments(stage: CrowdStage) -> int:
    """How many assignments a new HIT of the stage is published with: the cap, or, for an adaptive
    pipeline stage, ``min_answers`` (the pipeline adds more only for items still unsure)."""
    if stage.adaptive and stage.in_pipeline:
        return max(1, min(stage.min_answers, stage.max_assignments))
    return stage.max_assignments


def hit_assignment_cap(hit: HIT) -> int:
    """The most assignments the HIT may grow to: its stage's cap, and below 10 if it was made with
    fewer than 10 (MTurk refuses that increase; the commission rate would change)."""
    cap = hit.stage.max_assignments
    return min(cap, 9) if hit.max_assignments < 10 else cap


def project_reserved(project_id: int) -> Decimal:
    return HIT.objects.filter(project_id=project_id).exclude(status=HIT.Status.CANCELLED).aggregate(
        s=Sum("cost_reserved"))["s"] or Decimal("0.00")


def stage_estimate(*, stage: CrowdStage, items: list[Any] | None = None) -> Estimate:
    """The projected cost of putting ``items`` (default: every item not yet in a HIT) up."""
    pending = _unplanned_items(stage, items)
    n_hits = math.ceil(len(pending) / _per_hit(stage)) if pending else 0
    n = stage.max_assignments
    per_hit = hit_cost(reward=stage.reward, max_assignments=n, bonus=stage.bonus)
    rewards = _cents(stage.reward * n * n_hits)
    bonuses = _cents(stage.bonus * n * n_hits)
    total = _cents(per_hit * n_hits)
    reserved = project_reserved(stage.project_id)
    budget = stage.project.budget_usd
    fits = min(n_hits, int((budget - reserved) // per_hit)) if per_hit > 0 and budget > reserved else 0
    return Estimate(items=len(pending), hits=n_hits, assignments=n * n_hits, rewards=rewards,
                    commission=total - rewards - bonuses, bonuses=bonuses, total=total, budget=budget,
                    reserved=reserved, fits=fits)


# --- Credentials ------------------------------------------------------------------------------

def credentials_set(*, project: Project, access_key_id: str, secret_access_key: str,
                    endpoint_url: str = "") -> ProviderCredentials:
    if not access_key_id.strip() or not secret_access_key.strip():
        raise CrowdError("Both the access key id and the secret access key are needed.")
    creds, _ = ProviderCredentials.objects.update_or_create(
        project=project,
        defaults={"access_key_id": access_key_id.strip(), "secret_encrypted": crypto.encrypt(secret_access_key.strip()),
                  "endpoint_url": endpoint_url.strip()},
    )
    from crowd.providers.mturk import reset_clients

    reset_clients()
    return creds


# --- Planning HITs ----------------------------------------------------------------------------

def _per_hit(stage: CrowdStage) -> int:
    return 1 if stage.kind in ("segmentation", "spotting") else stage.items_per_hit


def _item_key(items: list[Any]) -> str:
    def k(i: Any) -> str:
        return "-".join(str(x) for x in i) if isinstance(i, (list, tuple)) else str(i)

    return ",".join(sorted(k(i) for i in items))[:200]


def stage_default_items(stage: CrowdStage) -> list[Any]:
    """What a stage works on when the caller names nothing: the project's images (category
    labeling) or its outlines waiting for verification. Other stages are fed by the pipeline."""
    if stage.kind == "categories":
        return list(Image.objects.filter(project_id=stage.project_id).order_by("id").values_list("id", flat=True))
    if stage.kind == "verification":
        return list(Polygon.objects.filter(image__project_id=stage.project_id, status=Polygon.Status.PENDING)
                    .order_by("id").values_list("id", flat=True))
    return []


def _unplanned_items(stage: CrowdStage, items: list[Any] | None) -> list[Any]:
    items = stage_default_items(stage) if items is None else list(items)
    planned: set[str] = set()
    for hit_items in HIT.objects.filter(stage=stage).exclude(status=HIT.Status.CANCELLED).values_list("items", flat=True):
        planned.update(_item_key([i]) for i in hit_items)
    return [i for i in items if _item_key([i]) not in planned]


@dataclass
class PlanResult:
    created: list[int] = field(default_factory=list)
    stopped_by_budget: int = 0  # HITs that did not fit


def hits_plan(*, stage: CrowdStage, items: list[Any] | None = None) -> PlanResult:
    """Make HIT rows (PENDING, each with its token and task page) up to the project's budget."""
    result = PlanResult()
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=stage.project_id)
        pending = _unplanned_items(stage, items)
        size = _per_hit(stage)
        chunks = [pending[i:i + size] for i in range(0, len(pending), size)]
        # The budget holds the most a HIT can cost (its cap), even when it starts with fewer.
        cost = hit_cost(reward=stage.reward, max_assignments=stage.max_assignments, bonus=stage.bonus)
        first = hit_first_assignments(stage)
        reserved = project_reserved(project.pk)
        for chunk in chunks:
            if reserved + cost > project.budget_usd:
                result.stopped_by_budget = len(chunks) - len(result.created)
                break
            token = uuid.uuid4().hex
            url, ref = seams.task_url_for(project=project, kind=stage.kind, items=chunk, token=token)
            check_task_url(url, allow_http_loopback=settings.CROWD_ALLOW_HTTP_LOOPBACK)
            hit = HIT.objects.create(
                stage=stage, project=project, unique_request_token=token, items=chunk, item_key=_item_key(chunk),
                task_url=url, task_ref=ref, max_assignments=first, reward=stage.reward,
                cost_reserved=cost,
            )
            reserved += cost
            result.created.append(hit.pk)
        if result.stopped_by_budget:
            CrowdStage.objects.filter(pk=stage.pk).update(
                status=CrowdStage.Status.PAUSED,
                status_reason=f"Budget reached: {result.stopped_by_budget} HITs (${cost} each) do not fit in "
                              f"${project.budget_usd} (reserved ${reserved}).")
    return result


def stage_requirements(stage: CrowdStage) -> list[Requirement]:
    reqs = []
    if stage.min_approval_rate is not None:
        reqs.append(Requirement(QUAL_APPROVAL_RATE, "GreaterThanOrEqualTo", [stage.min_approval_rate]))
    if stage.min_approved_hits is not None:
        reqs.append(Requirement(QUAL_APPROVED_HITS, "GreaterThanOrEqualTo", [stage.min_approved_hits]))
    if stage.locales:
        reqs.append(Requirement(QUAL_LOCALE, "In", locale_values=[{"Country": c} for c in stage.locales]))
    if stage.require_training:
        qual = TrainingQualification.objects.filter(project_id=stage.project_id).first()
        if qual is None:
            raise CrowdError("The stage requires training but the project has no training qualification yet.")
        reqs.append(Requirement(qual.qualification_type_id, "GreaterThanOrEqualTo", [1]))
    return reqs


def stage_hit_type(*, stage: CrowdStage, provider: CrowdProvider | None = None) -> str:
    """Register the stage's HIT type (CreateHITType is idempotent: same properties, same id)."""
    provider = provider or provider_for(stage.project_id)
    if stage.require_training:
        training_qualification_ensure(project=stage.project, provider=provider)
    unit_type = UnitType(
        title=stage.title, description=stage.description, keywords=stage.keywords, reward=stage.reward,
        assignment_duration_s=stage.assignment_duration_s, auto_approval_delay_s=stage.auto_approval_delay_s,
        requirements=stage_requirements(stage),
    )
    type_id = provider.unit_type_register(unit_type)
    if type_id != stage.hit_type_id:
        CrowdStage.objects.filter(pk=stage.pk).update(hit_type_id=type_id)
        stage.hit_type_id = type_id
    return type_id


# --- Publishing -------------------------------------------------------------------------------

def _annotation(hit: HIT) -> str:
    return f"annotator:hit:{hit.pk}"


def hit_publish(*, hit_id: int, provider: CrowdProvider | None = None) -> HIT | None:
    """Create the HIT at the provider once. Safe to repeat: the token makes a retry harmless."""
    hit = HIT.objects.select_related("stage").filter(pk=hit_id).first()
    if hit is None or hit.status != HIT.Status.PENDING or hit.provider_hit_id:
        return hit
    stage = hit.stage
    provider = provider or provider_for(hit.project_id)
    type_id = stage.hit_type_id or stage_hit_type(stage=stage, provider=provider)
    if hit.publish_attempts and clock.now() - hit.created_at > TOKEN_LIFETIME:
        # The provider forgets tokens after 24 hours: an earlier attempt may have made the HIT.
        annotation = _annotation(hit)
        earlier = next((u for u in provider.units_all() if u.annotation == annotation), None)
        if earlier is not None:
            HIT.objects.filter(pk=hit.pk, provider_hit_id__isnull=True).update(
                provider_hit_id=earlier.id, hit_type_id=earlier.type_id or type_id, status=HIT.Status.PUBLISHED,
                published_at=clock.now(), expires_at=earlier.expiration)
            hit.refresh_from_db()
            return hit
    HIT.objects.filter(pk=hit.pk).update(publish_attempts=F("publish_attempts") + 1)
    question = external_question_xml(
        check_task_url(hit.task_url, allow_http_loopback=settings.CROWD_ALLOW_HTTP_LOOPBACK), stage.frame_height)
    try:
        unit = provider.unit_create(type_id=type_id, question=question, max_assignments=hit.max_assignments,
                                    lifetime_s=stage.lifetime_s, annotation=_annotation(hit),
                                    token=hit.unique_request_token)
    except TransientProviderError:
        raise
    except AlreadyExists as exc:
        # An earlier call made it (its answer was lost): look it up instead of making another.
        if not exc.existing_id:
            raise ProviderError(f"The provider says HIT #{hit.pk} exists but names no HIT id: {exc}") from exc
        unit = provider.unit_get(exc.existing_id)
        if unit.annotation and unit.annotation != _annotation(hit):
            raise ProviderError(f"HIT {unit.id} does not belong to HIT #{hit.pk} ({unit.annotation!r}).") from exc
    except ProviderError as exc:
        # Refused for good (bad URL, no funds...): say why on the row; it stays pending for a relaunch.
        HIT.objects.filter(pk=hit.pk).update(status_reason=str(exc)[:300])
        raise
    HIT.objects.filter(pk=hit.pk, provider_hit_id__isnull=True).update(
        provider_hit_id=unit.id, hit_type_id=unit.type_id or type_id, status=HIT.Status.PUBLISHED,
        published_at=clock.now(), expires_at=unit.expiration)
    hit.refresh_from_db()
    return hit


@dataclass
class PublishResult:
    published: int = 0
    stopped_by_balance: int = 0
    balance: Decimal | None = None


def stage_publish(*, stage_id: int, provider: CrowdProvider | None = None) -> PublishResult:
    """Publish the stage's pending HITs while the account balance covers them."""
    stage = CrowdStage.objects.select_related("project").get(pk=stage_id)
    result = PublishResult()
    pending = list(HIT.objects.filter(stage=stage, status=HIT.Status.PENDING).order_by("id"))
    if not pending:
        return result
    provider = provider or provider_for(stage.project_id)
    if not stage.hit_type_id:
        stage_hit_type(stage=stage, provider=provider)
    balance = provider.balance()
    result.balance = balance
    for hit in pending:
        if hit.cost_reserved > balance:
            result.stopped_by_balance = len(pending) - result.published
            CrowdStage.objects.filter(pk=stage.pk).update(
                status=CrowdStage.Status.PAUSED,
                status_reason=f"Account balance reached: ${balance} left, the next HIT needs ${hit.cost_reserved}; "
                              f"{result.stopped_by_balance} HITs wait. Add funds and launch again.")
            break
        hit_publish(hit_id=hit.pk, provider=provider)
        balance -= hit.cost_reserved
        result.published += 1
    return result


def stage_plan(*, stage_id: int, items: list[Any] | None = None,
               provider: CrowdProvider | None = None) -> PlanResult:
    """Register the HIT type and plan the stage's HITs up to the budget (nothing published yet)."""
    stage = CrowdStage.objects.select_related("project").get(pk=stage_id)
    provider = provider or provider_for(stage.project_id)
    stage_hit_type(stage=stage, provider=provider)
    CrowdStage.objects.filter(pk=stage.pk).update(status=CrowdStage.Status.LAUNCHED, status_reason="")
    return hits_plan(stage=stage, items=items)


def stage_launch(*, stage_id: int, items: list[Any] | None = None,
                 provider: CrowdProvider | None = None) -> tuple[PlanResult, PublishResult]:
    """Plan the stage's HITs up to the budget and publish them up to the balance."""
    stage = CrowdStage.objects.get(pk=stage_id)
    provider = provider or provider_for(stage.project_id)
    plan = stage_plan(stage_id=stage_id, items=items, provider=provider)
    return plan, stage_publish(stage_id=stage_id, provider=provider)


def hit_extend(*, hit_id: int, seconds: int, provider: CrowdProvider | None = None) -> HIT:
    hit = HIT.objects.get(pk=hit_id)
    if not hit.provider_hit_id:
        raise CrowdError("This HIT was never published.")
    provider = provider or provider_for(hit.project_id)
    expire_at = max(clock.now(), hit.expires_at or clock.now()) + timedelta(seconds=seconds)
    provider.unit_set_expiration(hit.provider_hit_id, expire_at)
    HIT.objects.filter(pk=hit.pk).update(expires_at=expire_at, status=HIT.Status.PUBLISHED)
    hit.refresh_from_db()
    return hit


def _extension_token(hit: HIT, total: int) -> str:
    # The HIT's own token and the total it grows to: a retried task asks for the same total with
    # the same token, so the provider extends the HIT once.
    return f"{hit.unique_request_token[:48]}-more-{total}"


def hit_add_assignments(*, hit_id: int, number: int = 1, from_total: int | None = None,
                        provider: CrowdProvider | None = None) -> HIT:
    """Let ``number`` more workers take a published HIT (CreateAdditionalAssignmentsForHIT), up to
    its cap. ``from_total``: the assignment count the caller saw; if another run already grew the
    HIT past ``from_total + number``, nothing more is asked. Safe to repeat: the token names the
    new total, and the local count only goes up."""
    hit = HIT.objects.select_related("stage", "project").get(pk=hit_id)
    if not hit.provider_hit_id:
        raise CrowdError("This HIT was never published.")
    if number < 1:
        raise CrowdError("Add at least one assignment.")
    total = (hit.max_assignments if from_total is None else from_total) + number
    if hit.max_assignments >= total:
        return hit  # grown by a concurrent or earlier run
    if total > hit_assignment_cap(hit):
        raise CrowdError(f"HIT #{hit.pk} cannot grow to {total} assignments (its cap is {hit_assignment_cap(hit)}).")
    need = hit_cost(reward=hit.reward, max_assignments=total, bonus=hit.stage.bonus)
    if need > hit.cost_reserved:
        # Planned with a smaller reservation (the stage's cap was raised since): reserve the rest.
        with transaction.atomic():
            project = Project.objects.select_for_update().get(pk=hit.project_id)
            current = HIT.objects.select_for_update().get(pk=hit.pk).cost_reserved
            if need > current:
                if project_reserved(project.pk) + need - current > project.budget_usd:
                    raise CrowdError(f"Adding {number} assignments to HIT #{hit.pk} would take the project over "
                                     f"its budget of ${project.budget_usd}.")
                HIT.objects.filter(pk=hit.pk).update(cost_reserved=need)
    provider = provider or provider_for(hit.project_id)
    try:
        provider.unit_add_assignments(hit.provider_hit_id, number, token=_extension_token(hit, total))
    except AlreadyExists:
        pass  # an earlier run of this call extended it; its answer was lost
    HIT.objects.filter(pk=hit.pk, max_assignments__lt=total).update(max_assignments=total)
    HIT.objects.filter(pk=hit.pk, status__in=[HIT.Status.REVIEWABLE, HIT.Status.DONE]).update(
        status=HIT.Status.PUBLISHED)
    hit.refresh_from_db()
    return hit


def hit_may_grow(hit: HIT) -> bool:
    """Whether an adaptive pipeline HIT may still get more assignments: it has undecided items,
    is below its cap and has not expired. Such a HIT is not over when its assignments are done."""
    stage = hit.stage
    if not (stage.adaptive and stage.in_pipeline) or not hit.provider_hit_id:
        return False
    if hit.status in (HIT.Status.DISPOSED, HIT.Status.CANCELLED, HIT.Status.EXPIRED):
        return False
    if hit.expires_at is not None and hit.expires_at <= clock.now():
        return False
    if hit.max_assignments >= hit_assignment_cap(hit):
        return False
    return PipelineItem.objects.filter(hit=hit, state=PipelineItem.State.ACTIVE).exists()


def hit_expire(*, hit_id: int, provider: CrowdProvider | None = None) -> HIT:
    """Stop new workers from taking the HIT now (work already accepted can still be submitted)."""
    hit = HIT.objects.get(pk=hit_id)
    if hit.provider_hit_id and hit.status in (HIT.Status.PUBLISHED, HIT.Status.REVIEWABLE):
        provider = provider or provider_for(hit.project_id)
        try:
            provider.unit_set_expiration(hit.provider_hit_id, clock.now() - timedelta(seconds=1))
        except NotFound:
            # Deleted at the provider meanwhile (a sync disposing of it between our read and this
            # call): nobody can take it any more, which is what expiring asks; the sync records it.
            log.info("HIT %s is already gone at the provider; nothing to expire", hit.provider_hit_id)
        HIT.objects.filter(pk=hit.pk).update(expires_at=clock.now())
    elif hit.status == HIT.Status.PENDING:
        HIT.objects.filter(pk=hit.pk, status=HIT.Status.PENDING).update(
            status=HIT.Status.CANCELLED, status_reason="Cancelled before it was published.")
    hit.refresh_from_db()
    return hit


# --- Workers ----------------------------------------------------------------------------------

def _worker(provider_worker_id: str) -> Worker:
    worker, _ = Worker.objects.get_or_create(provider_worker_id=provider_worker_id)
    return worker


def _project_of(worker: Worker) -> int | None:
    """The project whose requester account last dealt with the worker (for its credentials)."""
    return (Assignment.objects.filter(worker=worker, hit__isnull=False).order_by("-id")
            .values_list("hit__project_id", flat=True).first())


def worker_block(*, worker_id: int, reason: str, provider: CrowdProvider | None = None) -> Worker:
    worker = Worker.objects.get(pk=worker_id)
    if not reason.strip():
        raise CrowdError("A block needs a reason; the worker can read it.")
    (provider or provider_for(_project_of(worker))).worker_block(worker.provider_worker_id, reason.strip())
    Worker.objects.filter(pk=worker.pk).update(blocked=True, block_reason=reason.strip()[:300])
    worker.refresh_from_db()
    return worker


def workers_quality_review(*, worker_ids: Iterable[int], provider: CrowdProvider | None = None) -> list[int]:
    """Block workers whose gold record is confidently bad (``crowd.aggregation.quality.decide``:
    at least ``CROWD_BLOCK_MIN_GOLD`` gold answers and even the upper bound of their accuracy
    below ``CROWD_BLOCK_BELOW``); returns the ids blocked now. Their later answers stop counting
    in the pipeline, and the provider stops offering them our work."""
    import numpy as np

    from crowd.aggregation import quality

    workers = list(Worker.objects.filter(pk__in=set(worker_ids), blocked=False,
                                         gold_seen__gte=settings.CROWD_BLOCK_MIN_GOLD))
    if not workers:
        return []
    index = np.repeat(np.arange(len(workers)), [w.gold_seen for w in workers])
    correct = np.concatenate([np.arange(w.gold_seen) < w.gold_correct for w in workers])
    verdict = quality.decide(quality.gold_accuracy(index, correct, n_workers=len(workers)),
                             block_below=settings.CROWD_BLOCK_BELOW,
                             reject_below=max(settings.CROWD_BLOCK_BELOW, 0.6),
                             min_gold=settings.CROWD_BLOCK_MIN_GOLD)
    blocked = []
    for worker, name in zip(workers, verdict.names):
        if name != "block":
            continue
        reason = (f"Blocked from this requester's work: {worker.gold_seen - worker.gold_correct} of "
                  f"{worker.gold_seen} items with known answers were answered wrongly.")
        try:
            worker_block(worker_id=worker.pk, reason=reason, provider=provider)
            blocked.append(worker.pk)
        except TransientProviderError:
            raise
        except ProviderError as exc:
            log.warning("could not block worker %s: %s", worker.provider_worker_id, exc)
    return blocked


def workers_notify(*, worker_ids: Iterable[int], subject: str, text: str,
                   provider: CrowdProvider | None = None) -> dict[str, str]:
    workers = list(Worker.objects.filter(pk__in=list(worker_ids)))
    if not subject.strip() or not text.strip():
        raise CrowdError("A message needs a subject and a text.")
    by_project: dict[int | None, list[str]] = {}
    for w in workers:
        by_project.setdefault(_project_of(w), []).append(w.provider_worker_id)
    failures: dict[str, str] = {}
    for project_id, ids in by_project.items():
        failures.update((provider or provider_for(project_id)).workers_notify(ids, subject.strip(), text.strip()))
    return failures


def training_qualification_ensure(*, project: Project, provider: CrowdProvider | None = None) -> TrainingQualification:
    """The project's training qualification type, created at the provider once."""
    existing = TrainingQualification.objects.filter(project=project).first()
    if existing:
        return existing
    provider = provider or provider_for(project.pk)
    name = f"Annotator training: {project.name} (#{project.pk})"[:200]
    type_id = provider.qualification_type_create(
        name=name, description=f"Passed the outline training of the project {project.name}.")
    try:
        with transaction.atomic():
            return TrainingQualification.objects.create(project=project, name=name, qualification_type_id=type_id)
    except IntegrityError:
        return TrainingQualification.objects.get(project=project)


def training_grant(*, project_id: int, provider_worker_id: str,
                   provider: CrowdProvider | None = None) -> WorkerQualification | None:
    qual = TrainingQualification.objects.filter(project_id=project_id).first()
    if qual is None:
        return None
    worker = _worker(provider_worker_id)
    grant, _ = WorkerQualification.objects.get_or_create(worker=worker, qualification=qual)
    if grant.granted_at is None:
        (provider or provider_for(project_id)).qualification_grant(
            qualification_type_id=qual.qualification_type_id, worker_id=provider_worker_id, value=grant.value)
        WorkerQualification.objects.filter(pk=grant.pk).update(granted_at=clock.now())
        grant.refresh_from_db()
    return grant


def training_grants(*, since_hours: float = 48) -> int:
    granted = 0
    for project_id, worker_id in seams.training_passes(since=clock.now() - timedelta(hours=since_hours)):
        if not WorkerQualification.objects.filter(
                worker__provider_worker_id=worker_id, qualification__project_id=project_id,
                granted_at__isnull=False).exists():
            if training_grant(project_id=project_id, provider_worker_id=worker_id):
                granted += 1
    return granted


# --- Assignments: record, confirm, reconcile ---------------------------------------------------

def _answer_for(agent: Agent, stored: seams.StoredAnswer | None) -> tuple[Any, str, str]:
    """(answer, source, xml) for an assignment: the answer our server stored and validated when
    the worker submitted wins; the form in the provider's XML is used only without the tools."""
    if stored is not None and stored.worker_id == agent.worker_id:
        return stored.answer, "server", agent.answer_xml
    if seams.frontend_answers_available():
        return None, "none", agent.answer_xml
    try:
        fields = parse_answer_xml(agent.answer_xml)
    except AnswerXMLError as exc:
        return f"unreadable: {exc}", "form", agent.answer_xml
    return fields.get("answer"), "form", agent.answer_xml


_PROVIDER_STATE = {"Approved": Assignment.State.APPROVED, "Rejected": Assignment.State.REJECTED}


def _workers(provider_worker_ids: Iterable[str]) -> dict[str, Worker]:
    """Worker rows by provider id, made when missing (two or three queries for any number)."""
    ids = set(provider_worker_ids)
    found = {w.provider_worker_id: w for w in Worker.objects.filter(provider_worker_id__in=ids)}
    missing = ids - found.keys()
    if missing:
        Worker.objects.bulk_create([Worker(provider_worker_id=w) for w in missing], ignore_conflicts=True)
        found.update({w.provider_worker_id: w for w in Worker.objects.filter(provider_worker_id__in=missing)})
    return found


def _record(*, hit: HIT, agent: Agent, stored: seams.StoredAnswer | None, worker: Worker,
            existing: Assignment | None) -> Assignment:
    answer, source, xml = _answer_for(agent, stored)
    now = clock.now()
    values = {"hit": hit, "worker": worker, "provider_status": agent.status, "answer_xml": xml, "answer": answer,
              "answer_source": source, "task_answer_ref": stored.id if stored else None,
              "submitted_at": agent.submitted_at}
    assignment = existing
    if assignment is None:
        assignment, _ = Assignment.objects.get_or_create(
            provider_assignment_id=agent.id,
            defaults={**values, "state": Assignment.State.CONFIRMED, "confirmed_at": now},
        )
    if assignment.state in (Assignment.State.PENDING, Assignment.State.INVALID):
        if Assignment.objects.filter(pk=assignment.pk, state=assignment.state).update(
                **values, state=Assignment.State.CONFIRMED, confirmed_at=now):
            for k, v in values.items():
                setattr(assignment, k, v)
            assignment.state, assignment.confirmed_at = Assignment.State.CONFIRMED, now
        else:
            assignment.refresh_from_db()
    assignment.hit = hit
    final = _PROVIDER_STATE.get(agent.status)
    if final and assignment.state == Assignment.State.CONFIRMED:
        # Decided at the provider (auto-approval, or our call went through before a crash).
        _transition(assignment, final, feedback=agent.feedback)
    return assignment


def assignment_record(*, hit: HIT, agent: Agent, stored: seams.StoredAnswer | None) -> Assignment:
    """Upsert an assignment the provider listed (so it exists: CONFIRMED, or its final state)."""
    worker = _workers([agent.worker_id])[agent.worker_id]
    existing = Assignment.objects.filter(provider_assignment_id=agent.id).first()
    return _record(hit=hit, agent=agent, stored=stored, worker=worker, existing=existing)


def assignments_record(*, hit: HIT, agents: list[Agent]) -> list[Assignment]:
    """``assignment_record`` for every assignment of a HIT, with a constant number of lookups."""
    if not agents:
        return []
    stored = seams.stored_answers(a.id for a in agents)
    workers = _workers(a.worker_id for a in agents)
    ids = [a.id for a in agents]
    existing = {a.provider_assignment_id: a for a in Assignment.objects.filter(provider_assignment_id__in=ids)}
    new = [a for a in agents if a.id not in existing]
    if new:
        now = clock.now()
        rows = []
        for agent in new:
            answer, source, xml = _answer_for(agent, stored.get(agent.id))
            rows.append(Assignment(
                provider_assignment_id=agent.id, hit=hit, worker=workers[agent.worker_id],
                provider_status=agent.status, answer_xml=xml, answer=answer, answer_source=source,
                task_answer_ref=stored[agent.id].id if agent.id in stored else None,
                submitted_at=agent.submitted_at, state=Assignment.State.CONFIRMED, confirmed_at=now))
        Assignment.objects.bulk_create(rows, ignore_conflicts=True)  # a racing sync may have made some
        existing = {a.provider_assignment_id: a for a in Assignment.objects.filter(provider_assignment_id__in=ids)}
    return [_record(hit=hit, agent=agent, stored=stored.get(agent.id), worker=workers[agent.worker_id],
                    existing=existing.get(agent.id)) for agent in agents]


def assignment_note_answer(*, assignment_id: str, worker_id: str, hit_id: str) -> Assignment:
    """A browser told us of an assignment (query-string ids): kept PENDING until the provider confirms."""
    assignment, _ = Assignment.objects.get_or_create(
        provider_assignment_id=assignment_id[:128],
        defaults={"claimed_worker_id": worker_id[:128], "claimed_hit_id": hit_id[:128],
                  "state": Assignment.State.PENDING},
    )
    return assignment


def assignment_confirm(*, assignment_id: int, provider: CrowdProvider | None = None) -> Assignment:
    """Ask the provider (GetAssignment) whether a PENDING assignment is real, and whose it is."""
    assignment = Assignment.objects.get(pk=assignment_id)
    if assignment.state != Assignment.State.PENDING:
        return assignment
    if provider is None:
        claimed = HIT.objects.filter(provider_hit_id=assignment.claimed_hit_id).values_list(
            "project_id", flat=True).first() if assignment.claimed_hit_id else None
        provider = provider_for(claimed)
    Assignment.objects.filter(pk=assignment.pk).update(confirm_attempts=F("confirm_attempts") + 1)
    try:
        agent, unit = provider.agent_get(assignment.provider_assignment_id)
    except NotFound:
        # Not (yet) submitted, or never existed. Give up after CROWD_CONFIRM_GIVE_UP tries.
        if assignment.confirm_attempts + 1 >= settings.CROWD_CONFIRM_GIVE_UP:
            Assignment.objects.filter(pk=assignment.pk, state=Assignment.State.PENDING).update(
                state=Assignment.State.INVALID, feedback="The provider does not know this assignment.")
        assignment.refresh_from_db()
        return assignment
    hit = HIT.objects.filter(provider_hit_id=unit.id).first()
    problem = None
    if hit is None:
        problem = f"the assignment belongs to HIT {unit.id}, which is not one of ours"
    elif assignment.claimed_worker_id and agent.worker_id != assignment.claimed_worker_id:
        problem = f"the browser claimed worker {assignment.claimed_worker_id}, the provider says {agent.worker_id}"
    if problem:
        Assignment.objects.filter(pk=assignment.pk, state=Assignment.State.PENDING).update(
            state=Assignment.State.INVALID, feedback=f"Not counted: {problem}."[:1024])
        assignment.refresh_from_db()
        return assignment
    stored = seams.stored_answers([agent.id]).get(agent.id)
    return assignment_record(hit=hit, agent=agent, stored=stored)


def answers_collect(*, since_hours: float = 48, provider: CrowdProvider | None = None) -> int:
    """Record answers our server stored for assignment ids we never heard of, then confirm them."""
    known = Assignment.objects.values("provider_assignment_id")
    noted = 0
    for stored in seams.unseen_stored_answers(known=known, since=clock.now() - timedelta(hours=since_hours)):
        assignment_note_answer(assignment_id=stored.assignment_id, worker_id=stored.worker_id, hit_id=stored.hit_id)
        noted += 1
    pending = list(Assignment.objects.filter(state=Assignment.State.PENDING).values_list(
        "pk", "claimed_hit_id")[:500])
    projects = dict(HIT.objects.filter(provider_hit_id__in={h for _, h in pending if h}).values_list(
        "provider_hit_id", "project_id"))
    providers: dict[int | None, CrowdProvider] = {}
    for pk, claimed_hit in pending:
        # The claimed HIT only picks whose credentials ask; the provider's answer decides.
        project_id = projects.get(claimed_hit)
        if project_id not in providers:
            providers[project_id] = provider or provider_for(project_id)
        assignment_confirm(assignment_id=pk, provider=providers[project_id])
    return noted


# --- Review and payment -------------------------------------------------------------------------

def _transition(assignment: Assignment, state: str, *, feedback: str = "") -> bool:
    """CONFIRMED -> APPROVED/REJECTED once; the worker's counters and the reward move only with
    the update that wins, in the same transaction."""
    now = clock.now()
    values: dict[str, Any] = {"state": state, "decided_at": now,
                              "provider_status": "Approved" if state == Assignment.State.APPROVED else "Rejected"}
    if feedback:
        values["feedback"] = feedback[:1024]
    if not assignment.decision:
        values["decision"] = (Assignment.Decision.APPROVE if state == Assignment.State.APPROVED
                              else Assignment.Decision.REJECT)
    with transaction.atomic():
        won = Assignment.objects.filter(pk=assignment.pk, state=Assignment.State.CONFIRMED).update(**values) == 1
        if won and assignment.worker_id:
            counter = "approved" if state == Assignment.State.APPROVED else "rejected"
            Worker.objects.filter(pk=assignment.worker_id).update(
                **{counter: F(counter) + 1}, gold_seen=F("gold_seen") + assignment.gold_seen,
                gold_correct=F("gold_correct") + assignment.gold_correct)
            if state == Assignment.State.APPROVED and assignment.hit_id:
                hit = assignment.hit
                Payment.objects.create(
                    assignment=assignment, kind=Payment.Kind.REWARD, worker_id=assignment.worker_id,
                    project_id=hit.project_id, amount=hit.reward,
                    commission=fee_for(hit.reward, hit.max_assignments), status=Payment.Status.PAID,
                    unique_request_token=f"reward-{assignment.provider_assignment_id}"[:64], paid_at=now,
                    reason="approved")
    if won:
        for k, v in values.items():
            setattr(assignment, k, v)
    else:
        assignment.refresh_from_db()
    return won


def assignment_decide(*, assignment: Assignment, approve: bool | None = None, feedback: str = "") -> Assignment:
    """Write the decision (the rules', or the requester's override) before anything is sent."""
    if assignment.decision:
        return assignment
    if approve is None:
        stage = assignment.hit.stage
        j = rules.judge(kind=stage.kind, answer=assignment.answer, gold=stage.gold,
                        min_gold_accuracy=stage.min_gold_accuracy)
        approve, feedback = j.approve, feedback or j.feedback
        gold = {"gold_seen": j.gold_seen, "gold_correct": j.gold_correct}
    else:
        feedback = feedback or (rules.THANKS if approve else "Rejected by the requester.")
        gold = {}
    decision = Assignment.Decision.APPROVE if approve else Assignment.Decision.REJECT
    if Assignment.objects.filter(pk=assignment.pk, decision="").update(
            decision=decision, feedback=feedback[:1024], **gold):
        assignment.decision, assignment.feedback = decision, feedback[:1024]
        for k, v in gold.items():
            setattr(assignment, k, v)
    else:
        assignment.refresh_from_db()
    return assignment


def assignment_review(*, assignment_id: int | None = None, assignment: Assignment | None = None,
                      provider: CrowdProvider | None = None, approve: bool | None = None,
                      feedback: str = "") -> Assignment:
    """Decide (once) and tell the provider; repeated calls converge on one approval or rejection."""
    if assignment is None:
        assignment = Assignment.objects.select_related("hit__stage", "worker").get(pk=assignment_id)
    if assignment.state != Assignment.State.CONFIRMED:
        return assignment
    assignment = assignment_decide(assignment=assignment, approve=approve, feedback=feedback)
    provider = provider or provider_for(assignment.hit.project_id)
    want = (Assignment.State.APPROVED if assignment.decision == Assignment.Decision.APPROVE
            else Assignment.State.REJECTED)
    try:
        if want == Assignment.State.APPROVED:
            provider.agent_approve(assignment.provider_assignment_id, assignment.feedback)
        else:
            provider.agent_reject(assignment.provider_assignment_id, assignment.feedback)
        reached = want
    except InvalidState:
        # Already decided at the provider: by our earlier call, or by auto-approval.
        agent, _ = provider.agent_get(assignment.provider_assignment_id)
        reached = _PROVIDER_STATE.get(agent.status)
        if reached is None:
            raise
    _transition(assignment, reached, feedback=assignment.feedback if reached == want else "")
    return assignment


def _bonus_due(assignment: Assignment) -> bool:
    stage = assignment.hit.stage
    if stage.bonus <= 0 or assignment.state != Assignment.State.APPROVED:
        return False
    if stage.gold:
        return assignment.gold_seen > 0 and (assignment.gold_correct / assignment.gold_seen) >= stage.bonus_min_gold_accuracy
    return True


def bonus_grant(*, assignment_id: int, amount: Decimal | None = None, reason: str = "") -> Payment | None:
    """Make the bonus row (with its token) once; ``bonus_pay`` sends it."""
    assignment = Assignment.objects.select_related("hit__stage", "worker").get(pk=assignment_id)
    if assignment.worker is None or assignment.hit is None:
        raise CrowdError("Only confirmed assignments of our HITs can get a bonus.")
    if amount is None:
        if not _bonus_due(assignment):
            return None
        amount, reason = assignment.hit.stage.bonus, reason or assignment.hit.stage.bonus_reason
    amount = _cents(Decimal(amount))
    if amount <= 0 or not reason.strip():
        raise CrowdError("A bonus needs a positive amount and a reason the worker can read.")
    if Payment.objects.filter(assignment=assignment, kind=Payment.Kind.BONUS).exists():
        return Payment.objects.get(assignment=assignment, kind=Payment.Kind.BONUS)
    reserved = project_reserved(assignment.hit.project_id)
    spent_bonus = Payment.objects.filter(project_id=assignment.hit.project_id, kind=Payment.Kind.BONUS).aggregate(
        s=Sum("amount"))["s"] or Decimal("0")
    if amount != assignment.hit.stage.bonus and reserved + spent_bonus + amount > assignment.hit.project.budget_usd:
        raise CrowdError("This bonus would take the project over its budget.")
    try:
        with transaction.atomic():
            return Payment.objects.create(
                assignment=assignment, worker=assignment.worker, project_id=assignment.hit.project_id,
                kind=Payment.Kind.BONUS, amount=amount, commission=fee_for(amount, assignment.hit.max_assignments),
                reason=reason.strip()[:1024], unique_request_token=uuid.uuid4().hex)
    except IntegrityError:
        return Payment.objects.get(assignment=assignment, kind=Payment.Kind.BONUS)


def bonus_pay(*, payment_id: int, provider: CrowdProvider | None = None) -> Payment:
    """SendBonus with the row's token; a repeat is refused by the provider, so paid once."""
    payment = Payment.objects.select_related("assignment", "worker").get(pk=payment_id)
    if payment.status != Payment.Status.PENDING or payment.kind != Payment.Kind.BONUS:
        return payment
    provider = provider or provider_for(payment.project_id)
    if payment.attempts and clock.now() - payment.created_at > TOKEN_LIFETIME:
        # The provider forgets tokens after 24 hours: look for the bonus before paying again.
        for paid in provider.worker_bonuses_for(payment.assignment.provider_assignment_id):
            if Decimal(str(paid.get("BonusAmount", "0"))) == payment.amount:
                Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.PAID, paid_at=clock.now())
                payment.refresh_from_db()
                return payment
    Payment.objects.filter(pk=payment.pk).update(attempts=F("attempts") + 1)
    try:
        provider.worker_bonus(worker_id=payment.worker.provider_worker_id,
                              agent_id=payment.assignment.provider_assignment_id, amount=payment.amount,
                              reason=payment.reason, token=payment.unique_request_token)
    except AlreadyExists:
        pass  # paid by an earlier call whose answer we lost
    except TransientProviderError:
        raise
    except ProviderError as exc:
        Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.FAILED, error=str(exc)[:500])
        payment.refresh_from_db()
        return payment
    Payment.objects.filter(pk=payment.pk, status=Payment.Status.PENDING).update(
        status=Payment.Status.PAID, paid_at=clock.now(), error="")
    payment.refresh_from_db()
    return payment


# --- Sync ---------------------------------------------------------------------------------------

@dataclass
class SyncReport:
    hits: int = 0
    assignments: int = 0
    approved: int = 0
    rejected: int = 0
    bonuses: int = 0
    disposed: int = 0
    failed: int = 0

    def add(self, other: "SyncReport") -> None:
        for name in ("hits", "assignments", "approved", "rejected", "bonuses", "disposed", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def hit_sync(*, hit_id: int, provider: CrowdProvider | None = None) -> SyncReport:
    """List the HIT's submitted assignments, reconcile, review, pay bonuses, delete when done."""
    report = SyncReport(hits=1)
    hit = HIT.objects.select_related("stage", "stage__project").filter(pk=hit_id).first()
    if hit is None or not hit.provider_hit_id or hit.status in (HIT.Status.DISPOSED, HIT.Status.CANCELLED):
        return report
    provider = provider or provider_for(hit.project_id)
    agents = list(provider.agents_for_unit(hit.provider_hit_id))
    recorded = assignments_record(hit=hit, agents=agents)
    report.assignments = len(agents)
    for assignment in recorded:
        if assignment.state == Assignment.State.CONFIRMED:
            done = assignment_review(assignment=assignment, provider=provider)
            report.approved += done.state == Assignment.State.APPROVED
            report.rejected += done.state == Assignment.State.REJECTED
    judged = [a.worker_id for a in recorded if a.worker_id and a.gold_seen]
    if judged:
        workers_quality_review(worker_ids=judged, provider=provider)
    unpaid = False
    if hit.stage.bonus > 0:
        for a in hit.assignments.filter(state=Assignment.State.APPROVED).select_related("hit__stage"):
            payment = bonus_grant(assignment_id=a.pk)
            if payment is not None and payment.status == Payment.Status.PENDING:
                paid = bonus_pay(payment_id=payment.pk, provider=provider).status == Payment.Status.PAID
                report.bonuses += paid
                unpaid = unpaid or not paid
    counts = hit.assignments.aggregate(
        open=Count("id", filter=Q(state__in=[Assignment.State.CONFIRMED, Assignment.State.PENDING])),
        decided=Count("id", filter=Q(state__in=[Assignment.State.APPROVED, Assignment.State.REJECTED])))
    expired = hit.expires_at is not None and hit.expires_at <= clock.now()
    values: dict[str, Any] = {"synced_at": clock.now()}
    if not expired and counts["decided"] >= hit.max_assignments and hit_may_grow(hit):
        values["status"] = HIT.Status.REVIEWABLE  # the pipeline may still add assignments: keep it
    elif not counts["open"] and not unpaid and (counts["decided"] >= hit.max_assignments or expired):
        try:
            provider.unit_delete(hit.provider_hit_id)
        except NotFound:
            pass  # deleted by an earlier run
        # What the HIT cost in the end releases the rest of its reservation (a HIT stopped
        # early by adaptive redundancy used fewer assignments than it reserved).
        paid = Payment.objects.filter(assignment__hit=hit).exclude(status=Payment.Status.FAILED).aggregate(
            s=Sum(F("amount") + F("commission")))["s"] or Decimal("0.00")
        values.update(status=HIT.Status.DISPOSED, disposed_at=clock.now(), cost_reserved=_cents(paid))
        report.disposed = 1
    elif counts["decided"] >= hit.max_assignments:
        values["status"] = HIT.Status.DONE
    else:
        values["status"] = HIT.Status.REVIEWABLE
    HIT.objects.filter(pk=hit.pk).exclude(status=HIT.Status.DISPOSED).update(**values)
    return report


def stage_sync(*, stage_id: int, provider: CrowdProvider | None = None) -> SyncReport:
    """One ListReviewableHITs pass for the stage's HIT type, then ``hit_sync`` for each of ours."""
    report = SyncReport()
    stage = CrowdStage.objects.filter(pk=stage_id).first()
    if stage is None or not stage.hit_type_id:
        return report
    provider = provider or provider_for(stage.project_id)
    batch: list[str] = []

    def flush() -> None:
        ours = dict(HIT.objects.filter(provider_hit_id__in=batch).exclude(
            status__in=[HIT.Status.DISPOSED, HIT.Status.CANCELLED]).values_list("provider_hit_id", "pk"))
        for unit_id in batch:
            if unit_id not in ours:
                continue
            try:
                report.add(hit_sync(hit_id=ours[unit_id], provider=provider))
            except TransientProviderError:
                raise  # the task is retried as a whole; what was done stays done
            except ProviderError as exc:
                # One HIT the provider refuses (e.g. no funds to approve) must not stop the others.
                log.warning("sync of HIT %s failed: %s", unit_id, exc)
                HIT.objects.filter(pk=ours[unit_id]).update(status_reason=str(exc)[:300])
                report.failed += 1
        batch.clear()

    # Read the whole list before changing anything: deleting HITs while paging would shift the
    # pages under the NextToken and skip HITs (the next beat would find them, but later).
    unit_ids = [unit.id for unit in provider.units_reviewable(type_id=stage.hit_type_id)]
    for start in range(0, len(unit_ids), SYNC_BATCH):
        batch.extend(unit_ids[start:start + SYNC_BATCH])
        flush()
    if not HIT.objects.filter(stage=stage).exclude(
            status__in=[HIT.Status.DISPOSED, HIT.Status.CANCELLED]).exists() and \
            stage.status == CrowdStage.Status.LAUNCHED and not _unplanned_items(stage, None):
        CrowdStage.objects.filter(pk=stage.pk).update(status=CrowdStage.Status.FINISHED)
    return report
