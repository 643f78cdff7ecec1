"""Read queries of the marketplace: requester-scoped lookups, keyset pages, the worker's views.

Every requester lookup filters by the requester's account, so another requester's HIT is simply
"not found". Lists page by primary key (keyset), so a page costs the same at item 10 or 10,000.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core import signing
from django.db.models import Count, Exists, Min, Q, Sum

from annotator.prepared import PreparedQuery
from crowd.marketplace import clock, errors, qualifications
from crowd.marketplace.models import (
    HIT,
    Assignment,
    BonusPayment,
    HITType,
    Qualification,
    QualificationType,
    RequesterAccount,
    WorkerBlock,
    WorkerNotification,
    WorkerProfile,
)

_TOKEN_SALT = "crowd.marketplace.next-token"


# --- Requester side ----------------------------------------------------------------------------

def hit_for_requester(*, account: RequesterAccount, hit_id: str) -> HIT:
    hit = HIT.objects.select_related("hit_type").filter(account=account, hit_id=hit_id).first()
    if hit is None:
        raise errors.hit_not_found(hit_id)
    return hit


def hit_type_for_requester(*, account: RequesterAccount, hit_type_id: str) -> HITType:
    hit_type = HITType.objects.filter(account=account, hit_type_id=hit_type_id).first()
    if hit_type is None:
        raise errors.hit_type_not_found(hit_type_id)
    return hit_type


def assignment_for_requester(*, account: RequesterAccount, assignment_id: str) -> Assignment:
    assignment = (Assignment.objects.select_related("hit", "hit__hit_type", "worker")
                  .filter(hit__account=account, assignment_id=assignment_id, status__in=Assignment.VISIBLE).first())
    if assignment is None:
        raise errors.assignment_not_found(assignment_id)
    return assignment


def qualification_type_for_requester(*, account: RequesterAccount, qualification_type_id: str) -> QualificationType:
    qtype = QualificationType.objects.filter(account=account, qualification_type_id=qualification_type_id).first()
    if qtype is None:
        raise errors.qualification_type_not_found(qualification_type_id)
    return qtype


def worker_by_id(*, worker_id: str) -> WorkerProfile:
    worker = WorkerProfile.objects.filter(worker_id=worker_id).first()
    if worker is None:
        raise errors.worker_not_found(worker_id)
    return worker


def page_token(kind: str, last_pk: int) -> str:
    return signing.dumps([kind, last_pk], salt=_TOKEN_SALT, compress=True)


def _after(kind: str, token: str | None) -> int:
    if not token:
        return 0
    try:
        got_kind, last_pk = signing.loads(token, salt=_TOKEN_SALT)
    except (signing.BadSignature, ValueError, TypeError):
        raise errors.RequestError(f"The NextToken is not valid. {errors._stamp()}",
                                  "AWS.MechanicalTurk.InvalidNextToken") from None
    if got_kind != kind or not isinstance(last_pk, int):
        raise errors.RequestError(f"The NextToken belongs to another list. {errors._stamp()}",
                                  "AWS.MechanicalTurk.InvalidNextToken")
    return last_pk


@dataclass
class Page:
    items: list
    next_token: str | None


def _page(queryset, kind: str, token: str | None, max_results: int | None) -> Page:
    size = max_results or 10
    rows = list(queryset.filter(pk__gt=_after(kind, token)).order_by("pk")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return Page(rows, page_token(kind, rows[-1].pk) if more and rows else None)


def hits_page(*, account: RequesterAccount, token: str | None, max_results: int | None) -> Page:
    qs = HIT.objects.select_related("hit_type").filter(account=account, disposed=False)
    return _page(qs, "hits", token, max_results)


def reviewable_hits_page(*, account: RequesterAccount, status: str | None, hit_type_id: str | None,
                         token: str | None, max_results: int | None) -> Page:
    now = clock.now()
    qs = HIT.objects.select_related("hit_type").filter(account=account, disposed=False)
    if hit_type_id:
        qs = qs.filter(hit_type__hit_type_id=hit_type_id)
    if status == "Reviewing":
        qs = qs.filter(reviewing=True)
    else:
        qs = qs.filter(reviewing=False, num_pending=0).filter(Q(expiration__lte=now) | Q(num_available=0))
    return _page(qs, f"reviewable:{status or 'Reviewable'}:{hit_type_id or ''}", token, max_results)


def assignments_page(*, hit: HIT, statuses: list[str] | None, token: str | None, max_results: int | None) -> Page:
    qs = Assignment.objects.select_related("worker").filter(hit=hit, status__in=statuses or Assignment.VISIBLE)
    return _page(qs, f"assignments:{hit.pk}:{','.join(sorted(statuses or []))}", token, max_results)


def bonuses_page(*, account: RequesterAccount, hit: HIT | None, assignment: Assignment | None,
                 token: str | None, max_results: int | None) -> Page:
    qs = BonusPayment.objects.select_related("worker", "assignment").filter(account=account)
    if hit is not None:
        qs = qs.filter(assignment__hit=hit)
    if assignment is not None:
        qs = qs.filter(assignment=assignment)
    return _page(qs, f"bonuses:{hit.pk if hit else ''}:{assignment.pk if assignment else ''}", token, max_results)


def qualifications_page(*, qualification_type: QualificationType, status: str | None, token: str | None,
                        max_results: int | None) -> Page:
    qs = Qualification.objects.select_related("worker").filter(qualification_type=qualification_type)
    if status:
        qs = qs.filter(status=status)
    return _page(qs, f"quals:{qualification_type.pk}:{status or ''}", token, max_results)


def blocks_page(*, account: RequesterAccount, token: str | None, max_results: int | None) -> Page:
    qs = WorkerBlock.objects.select_related("worker").filter(account=account)
    return _page(qs, "blocks", token, max_results)


def balance_on_hold(*, account: RequesterAccount) -> Decimal:
    return HIT.objects.filter(account=account).aggregate(total=Sum("held"))["total"] or Decimal("0.00")


# --- Worker side -------------------------------------------------------------------------------

def worker_can_see_account(*, worker: WorkerProfile, account_id: int) -> bool:
    """Public or joined by invitation, and not blocking the worker: one query."""
    blocked = WorkerBlock.objects.filter(account_id=account_id, worker=worker)
    return RequesterAccount.objects.filter(
        Q(pk=account_id) & (Q(is_public=True) | Q(workers=worker)) & ~Exists(blocked)).exists()


def _visible_accounts(worker: WorkerProfile):
    blocked = WorkerBlock.objects.filter(worker=worker).values("account_id")
    return (RequesterAccount.objects.filter(Q(is_public=True) | Q(workers=worker))
            .exclude(pk__in=blocked).values("pk"))


def worker_qualification_values(*, worker: WorkerProfile, type_ids: set[str]) -> dict:
    """The worker's value for each qualification type id asked about (system types computed)."""
    values: dict = {}
    if qualifications.LOCALE in type_ids:
        values[qualifications.LOCALE] = qualifications.Locale(worker.country, worker.subdivision)
    if type_ids & {qualifications.NUMBER_HITS_APPROVED, qualifications.PERCENT_APPROVED}:
        counts = worker.assignments.aggregate(
            approved=Count("id", filter=Q(status=Assignment.Status.APPROVED)),
            rejected=Count("id", filter=Q(status=Assignment.Status.REJECTED)))
        total = counts["approved"] + counts["rejected"]
        values[qualifications.NUMBER_HITS_APPROVED] = counts["approved"]
        values[qualifications.PERCENT_APPROVED] = 100 if total == 0 else (100 * counts["approved"]) // total
    custom = type_ids - set(qualifications.SYSTEM_TYPES)
    if custom:
        for qtid, value in (Qualification.objects.filter(worker=worker, status="Granted",
                                                         qualification_type__qualification_type_id__in=custom)
                            .values_list("qualification_type__qualification_type_id", "integer_value")):
            values[qtid] = value
        for qtype in QualificationType.objects.filter(qualification_type_id__in=custom - set(values),
                                                      auto_granted=True, status="Active"):
            values[qtype.qualification_type_id] = qtype.auto_granted_value if qtype.auto_granted_value is not None else 1
    return values


def worker_actions(*, worker: WorkerProfile, hit_type: HITType) -> set[str]:
    reqs = hit_type.qualification_requirements or []
    if not reqs:
        return set(qualifications.ACTIONS)
    values = worker_qualification_values(worker=worker, type_ids={r["QualificationTypeId"] for r in reqs})
    return qualifications.allowed_actions(reqs, values)


@dataclass
class HITGroup:
    hit_type: HITType
    requester_name: str
    hits_available: int
    first_hit_id: str
    can_preview: bool
    can_accept: bool


def hit_groups_for_worker(*, worker: WorkerProfile, limit: int = 100) -> list[HITGroup]:
    """HIT groups the worker may discover, with how many HITs still have a slot for them."""
    now = clock.now()
    done_hits = Assignment.objects.filter(worker=worker, status__in=Assignment.HOLDING).values("hit_id")
    rows = (HIT.objects.filter(account__in=_visible_accounts(worker), disposed=False, reviewing=False,
                               expiration__gt=now, num_available__gt=0)
            .exclude(pk__in=done_hits)
            .values("hit_type_id")
            .annotate(n=Count("id"), first=Min("hit_id"))
            .order_by("-n")[: limit * 2])
    by_type = {row["hit_type_id"]: row for row in rows}
    types = HITType.objects.select_related("account__user").filter(pk__in=by_type)
    groups = []
    for hit_type in types:
        actions = worker_actions(worker=worker, hit_type=hit_type)
        if "Discover" not in actions:
            continue
        row = by_type[hit_type.pk]
        groups.append(HITGroup(hit_type, hit_type.account.user.get_username(), row["n"], row["first"],
                               "Preview" in actions, "Accept" in actions))
    groups.sort(key=lambda g: (-g.hits_available, g.hit_type.title))
    return groups[:limit]


def group_candidates(*, worker: WorkerProfile | int, hit_type_id: str, now=None):
    """The group's open HITs, in order, of requesters the worker sees and not done by them."""
    now = clock.now() if now is None else now
    done_hits = Assignment.objects.filter(worker=worker, status__in=Assignment.HOLDING).values("hit_id")
    return (HIT.objects.filter(hit_type__hit_type_id=hit_type_id, account__in=_visible_accounts(worker),
                               disposed=False, reviewing=False, expiration__gt=now, num_available__gt=0)
            .exclude(pk__in=done_hits).order_by("pk"))


def _first_free_candidate(worker_id: int, hit_type_pk: int, now):
    done_hits = Assignment.objects.filter(worker=worker_id, status__in=Assignment.HOLDING).values("hit_id")
    # The same conditions as group_candidates, by the group's key: PostgreSQL walks the group's
    # open HITs in order (index mkt_hit_open_by_type) and stops at the first it may lock.
    return (HIT.objects.filter(hit_type_id=hit_type_pk, account__in=_visible_accounts(worker_id),
                               disposed=False, reviewing=False, expiration__gt=now, num_available__gt=0)
            .exclude(pk__in=done_hits).order_by("pk")
            .select_for_update(of=("self",), skip_locked=True).select_related("hit_type")[:1])


# The first free candidate of a group, locked (skipping rows other accepts hold): every accept
# of a group starts with it, so it is compiled once per process.
first_free_candidate = PreparedQuery(_first_free_candidate, int, int, datetime)

_HIT_TYPE_KEYS: dict[str, int] = {}


def hit_type_pk(hit_type_id: str) -> int | None:
    """The database key of a HIT type id (a mapping that never changes), remembered per process."""
    pk = _HIT_TYPE_KEYS.get(hit_type_id)
    if pk is None:
        pk = HITType.objects.filter(hit_type_id=hit_type_id).values_list("pk", flat=True).first()
        if pk is not None and len(_HIT_TYPE_KEYS) < 10_000:
            _HIT_TYPE_KEYS[hit_type_id] = pk
    return pk


def group_candidate_hit_ids(*, worker: WorkerProfile, hit_type_id: str, limit: int = 20,
                            exclude: list[int] | None = None) -> list[str]:
    candidates = group_candidates(worker=worker, hit_type_id=hit_type_id)
    if exclude:
        candidates = candidates.exclude(pk__in=exclude)
    return list(candidates.values_list("hit_id", flat=True)[:limit])


def hit_for_worker(*, worker: WorkerProfile, hit_id: str) -> HIT | None:
    hit = HIT.objects.select_related("hit_type", "account__user").filter(hit_id=hit_id).first()
    if hit is None or not worker_can_see_account(worker=worker, account_id=hit.account_id):
        return None
    return hit


def assignment_for_worker(*, worker: WorkerProfile, assignment_id: str) -> Assignment | None:
    """The worker's assignment with what the work page shows of its HIT (not the question's text)."""
    return _assignment_for_worker.first(worker.pk, assignment_id)


_assignment_for_worker = PreparedQuery(
    lambda worker_id, assignment_id: (
        Assignment.objects.select_related("hit", "hit__hit_type")
        .defer("answer", "requester_feedback", "hit__question", "hit__html_content", "hit__hit_type__description",
               "hit__hit_type__qualification_requirements")
        .filter(worker_id=worker_id, assignment_id=assignment_id).order_by()[:1]),
    int, str)


@dataclass
class Dashboard:
    in_progress: list
    recent: list
    counts: dict
    earned: Decimal
    pending: Decimal
    bonuses: list


def worker_dashboard(*, worker: WorkerProfile) -> Dashboard:
    qs = Assignment.objects.filter(worker=worker)
    counts = dict(qs.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    earned = (qs.filter(status=Assignment.Status.APPROVED).aggregate(total=Sum("hit__hit_type__reward"))["total"]
              or Decimal("0.00"))
    bonus_total = BonusPayment.objects.filter(worker=worker).aggregate(total=Sum("amount"))["total"] or Decimal("0")
    pending = (qs.filter(status=Assignment.Status.SUBMITTED).aggregate(total=Sum("hit__hit_type__reward"))["total"]
               or Decimal("0.00"))
    return Dashboard(
        in_progress=list(qs.filter(status=Assignment.Status.ACCEPTED, deadline__gt=clock.now())
                         .select_related("hit__hit_type").order_by("deadline")),
        recent=list(qs.filter(status__in=Assignment.VISIBLE).select_related("hit__hit_type")
                    .order_by("-submit_time")[:50]),
        counts=counts,
        earned=(earned + bonus_total).quantize(Decimal("0.01")),
        pending=pending,
        bonuses=list(BonusPayment.objects.filter(worker=worker).order_by("-grant_time")[:20]),
    )


def worker_qualifications(*, worker: WorkerProfile) -> tuple[list, list]:
    """The worker's granted qualifications, and the auto-granted or tested types they may seek."""
    held = list(Qualification.objects.filter(worker=worker).select_related("qualification_type__account__user")
                .order_by("qualification_type__name"))
    held_ids = {q.qualification_type_id for q in held}
    offered = list(QualificationType.objects.filter(Q(auto_granted=True) | ~Q(test=""),
                                                    account__in=_visible_accounts(worker), status="Active")
                   .exclude(pk__in=held_ids)
                   .select_related("account__user").order_by("name"))
    return held, offered


def worker_notifications(*, worker: WorkerProfile, limit: int = 100) -> list[WorkerNotification]:
    return list(WorkerNotification.objects.filter(worker=worker).select_related("account__user")
                .order_by("-created_at")[:limit])


def worker_unread_count(*, worker: WorkerProfile) -> int:
    return WorkerNotification.objects.filter(worker=worker, read_at__isnull=True).count()
