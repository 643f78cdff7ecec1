"""Everything that changes the marketplace: keys, money, HITs, assignments, qualifications.

Locking: a service that may move money locks the requester's account row, then the HIT row
(always in that order), so balances and HIT counters stay exact under concurrent requests.
Handing out work locks only the HIT row (``select_for_update``), so two workers never get the
last assignment of a HIT. Business times come from ``crowd.marketplace.clock.now``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from decimal import Decimal
from xml.sax.saxutils import escape

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q

from annotator.prepared import PreparedQuery, prepared_cursor, save_fields, save_new
from crowd.marketplace import clock, crypto, errors, ids, money, qualifications, qualtests, questions
from crowd.marketplace.models import (
    HIT,
    Assignment,
    BonusPayment,
    HITExtension,
    HITType,
    LedgerEntry,
    Qualification,
    QualificationType,
    RequesterAccount,
    RequesterKey,
    WorkerBlock,
    WorkerInvite,
    WorkerNotification,
    WorkerProfile,
)

log = logging.getLogger(__name__)
ANSWER_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
TOKEN_LIFETIME = timedelta(hours=24)
DEFAULT_AUTO_APPROVAL = 2_592_000  # 30 days, MTurk's default


class WorkerError(Exception):
    """A worker-site action that cannot be done; the message is shown to the worker."""


class HITBusy(WorkerError):
    """Another accept holds the HIT's row (only with ``skip_locked``)."""


# --- Requesters, keys and money ----------------------------------------------------------------

def requester_account_for(*, user) -> RequesterAccount:
    account, _ = RequesterAccount.objects.get_or_create(user=user)
    return account


def requester_key_create(*, user) -> tuple[RequesterKey, str]:
    """A new access key pair for ``user``; the secret is returned once and stored encrypted."""
    account = requester_account_for(user=user)
    secret = ids.secret_access_key()
    key = RequesterKey.objects.create(account=account, secret_encrypted=crypto.encrypt(secret))
    return key, secret


def requester_key_revoke(*, key: RequesterKey) -> None:
    if key.is_active:
        key.is_active = False
        key.revoked_at = clock.now()
        key.save(update_fields=["is_active", "revoked_at"])


def _move(account: RequesterAccount, amount: Decimal, kind: str, reference: str = "") -> None:
    """Change a locked account's balance by ``amount`` and write it in the ledger."""
    if amount == 0:
        return
    if account.balance + amount < 0:
        raise errors.insufficient_funds()
    account.balance += amount
    account.save(update_fields=["balance"])
    LedgerEntry.objects.create(account=account, kind=kind, amount=amount, reference=reference, created_at=clock.now())


def _locked_account(account_id: int) -> RequesterAccount:
    return RequesterAccount.objects.select_for_update().get(pk=account_id)


def account_top_up(*, account: RequesterAccount, amount: Decimal, reference: str = "") -> RequesterAccount:
    if amount <= 0:
        raise ValueError("a top-up must be a positive amount")
    with transaction.atomic():
        locked = _locked_account(account.pk)
        _move(locked, amount.quantize(money.CENT), LedgerEntry.Kind.TOP_UP, reference)
    return locked


# --- HIT types and HITs ----------------------------------------------------------------------

def hit_type_get_or_create(*, account: RequesterAccount, title: str, description: str, reward: str,
                           assignment_duration: int, auto_approval_delay: int | None = None,
                           keywords: str = "", qualification_requirements: list | None = None) -> HITType:
    amount = money.parse_amount(reward, field="Reward")
    known = set(account.qualification_types.values_list("qualification_type_id", flat=True))
    reqs = qualifications.normalize(qualification_requirements or [], known_type_ids=known)
    delay = DEFAULT_AUTO_APPROVAL if auto_approval_delay is None else auto_approval_delay
    if not 30 <= assignment_duration <= 31_536_000:
        raise errors.parameter("AssignmentDurationInSeconds must be between 30 and 31536000 (one year).")
    if not 0 <= delay <= 2_592_000:
        raise errors.parameter("AutoApprovalDelayInSeconds must be between 0 and 2592000 (30 days).")
    props = {"title": title, "description": description, "keywords": keywords or "", "reward": str(amount),
             "assignment_duration": assignment_duration, "auto_approval_delay": delay, "requirements": reqs}
    fingerprint = hashlib.sha256(json.dumps(props, sort_keys=True).encode()).hexdigest()
    existing = HITType.objects.filter(account=account, fingerprint=fingerprint).first()
    if existing:
        return existing
    try:
        with transaction.atomic():
            return HITType.objects.create(
                account=account, fingerprint=fingerprint, title=title, description=description,
                keywords=keywords or "", reward=amount, assignment_duration=assignment_duration,
                auto_approval_delay=delay, qualification_requirements=reqs, created_at=clock.now(),
            )
    except IntegrityError:  # the same properties were registered by a concurrent request
        return HITType.objects.get(account=account, fingerprint=fingerprint)


def _hit_already_exists(hit_id: str) -> errors.RequestError:
    return errors.RequestError(
        f"The HIT with ID {hit_id} already exists: it was created by an earlier request with the same "
        f"UniqueRequestToken. {errors._stamp()}", "AWS.MechanicalTurk.HitAlreadyExists")


def hit_create(*, account: RequesterAccount, hit_type: HITType, question: str, lifetime: int,
               max_assignments: int = 1, requester_annotation: str = "", unique_request_token: str = "") -> HIT:
    if not 30 <= lifetime <= 31_536_000:
        raise errors.parameter("LifetimeInSeconds must be between 30 and 31536000 (one year).")
    if not 1 <= max_assignments <= 1_000_000:
        raise errors.parameter("MaxAssignments must be between 1 and 1000000.")
    parsed = questions.parse(question)
    now = clock.now()
    with transaction.atomic():
        locked = _locked_account(account.pk)
        if unique_request_token:
            earlier = (HIT.objects.filter(account=locked, unique_request_token=unique_request_token,
                                          created_at__gt=now - TOKEN_LIFETIME).values_list("hit_id", flat=True).first())
            if earlier:
                raise _hit_already_exists(earlier)
        hit = HIT.objects.create(
            account=locked, hit_type=hit_type, question=question, question_kind=parsed.kind,
            external_url=parsed.external_url, html_content=parsed.html_content, frame_height=parsed.frame_height,
            requester_annotation=requester_annotation or "", unique_request_token=unique_request_token or "",
            max_assignments=max_assignments, created_at=now, expiration=now + timedelta(seconds=lifetime),
            num_available=max_assignments,
        )
        _settle(locked, hit, now)
    return hit


def _recount(hit: HIT, *, worker: WorkerProfile | None = None) -> bool:
    """Set the HIT's counters from its assignments (under its row lock). With ``worker``, also
    tell in the same query whether that worker holds an assignment of it (accepted or done).

    Plain SQL: it runs on every accept and review, and building the ORM's filtered aggregate
    cost several times what the database spends on it."""
    S = Assignment.Status
    holding = ", ".join(["%s"] * len(Assignment.HOLDING))
    sql = (f"SELECT COALESCE(SUM(CASE WHEN status = %s THEN 1 ELSE 0 END), 0), "
           f"COALESCE(SUM(CASE WHEN status = %s THEN 1 ELSE 0 END), 0), "
           f"COALESCE(SUM(CASE WHEN status IN (%s, %s) THEN 1 ELSE 0 END), 0), "
           f"COALESCE(SUM(CASE WHEN worker_id = %s AND status IN ({holding}) THEN 1 ELSE 0 END), 0) "
           f"FROM {Assignment._meta.db_table} WHERE hit_id = %s")
    params = [S.ACCEPTED.value, S.SUBMITTED.value, S.APPROVED.value, S.REJECTED.value,
              worker.pk if worker else None, *[str(v) for v in Assignment.HOLDING], hit.pk]
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, params)
        pending, submitted, completed, mine = cursor.fetchone()
    hit.num_pending = int(pending)
    hit.num_submitted = int(submitted)
    hit.num_completed = int(completed)
    hit.num_available = max(0, hit.max_assignments - hit.num_pending - hit.num_submitted - hit.num_completed)
    return bool(mine)


def _settle(account: RequesterAccount, hit: HIT, now) -> None:
    """Hold exactly what the HIT may still cost: every unfilled slot while it is open, else the
    work in progress and awaiting review. The difference moves between balance and hold."""
    cost = money.cost_per_assignment(hit.hit_type.reward, hit.max_assignments)
    hit.open_for_work = not hit.disposed and hit.expiration > now
    if hit.open_for_work:
        target = (hit.max_assignments - hit.num_completed) * cost
    else:
        target = (hit.num_pending + hit.num_submitted) * cost
    delta = target - hit.held
    if delta:
        _move(account, -delta, LedgerEntry.Kind.HOLD if delta > 0 else LedgerEntry.Kind.RELEASE, hit.hit_id)
        hit.held = target
    hit.save()


def _lock_hit(account_id: int, hit_pk: int) -> tuple[RequesterAccount, HIT]:
    account = _locked_account(account_id)
    hit = HIT.objects.select_for_update(of=("self",)).select_related("hit_type").get(pk=hit_pk)
    return account, hit


def hit_update_expiration(*, hit: HIT, expire_at) -> HIT:
    now = clock.now()
    with transaction.atomic():
        account, hit = _lock_hit(hit.account_id, hit.pk)
        if hit.disposed:
            raise errors.RequestError(f"This HIT is currently in the state 'Disposed'. {errors._stamp()}",
                                      "AWS.MechanicalTurk.InvalidHITState")
        hit.expiration = expire_at if expire_at > now else now
        _settle(account, hit, now)
    return hit


def hit_update_review_status(*, hit: HIT, revert: bool) -> HIT:
    now = clock.now()
    with transaction.atomic():
        _, hit = _lock_hit(hit.account_id, hit.pk)
        status = hit.status_at(now)
        wanted = HIT.Status.REVIEWING if revert else HIT.Status.REVIEWABLE
        if status != wanted:
            raise errors.RequestError(
                f"This HIT is currently in the state '{status}'. This operation can be called with a status of: "
                f"{wanted} {errors._stamp()}", "AWS.MechanicalTurk.InvalidHITState")
        hit.reviewing = not revert
        hit.save(update_fields=["reviewing"])
    return hit


def hit_delete(*, hit: HIT) -> None:
    now = clock.now()
    with transaction.atomic():
        account, hit = _lock_hit(hit.account_id, hit.pk)
        status = hit.status_at(now)
        if status not in (HIT.Status.REVIEWABLE, HIT.Status.REVIEWING) or hit.num_submitted:
            raise errors.RequestError(
                f"This HIT is currently in the state '{status}'. This operation can be called with a status of: "
                f"Reviewable, after every submitted assignment is approved or rejected. {errors._stamp()}",
                "AWS.MechanicalTurk.InvalidHITState")
        hit.disposed = True
        hit.reviewing = False
        _settle(account, hit, now)


def hit_add_assignments(*, hit: HIT, number: int, unique_request_token: str = "", request_id: str) -> HIT:
    """CreateAdditionalAssignmentsForHIT: raise the HIT's MaxAssignments by ``number``.

    The HIT must be open (not disposed, not expired, not under review); a HIT whose assignments
    were all done becomes Assignable again. The new slots are held like CreateHIT's. A HIT made
    with fewer than 10 assignments cannot reach 10 (its commission rate would change). A token
    used within 24 hours is answered with an error naming the request that used it, and the HIT
    is not extended twice.
    """
    if not isinstance(number, int) or not 1 <= number <= 1_000_000:
        raise errors.parameter("NumberOfAdditionalAssignments must be between 1 and 1000000.")
    now = clock.now()
    with transaction.atomic():
        account, hit = _lock_hit(hit.account_id, hit.pk)
        if unique_request_token:
            earlier = (HITExtension.objects.filter(account=account, unique_request_token=unique_request_token,
                                                   created_at__gt=now - TOKEN_LIFETIME).first())
            if earlier is not None:
                raise errors.RequestError(
                    f"HIT {earlier.hit.hit_id} was already extended by request {earlier.request_id} with this "
                    f"UniqueRequestToken (to {earlier.max_assignments} assignments). {errors._stamp()}",
                    "AWS.MechanicalTurk.ExtensionAlreadyExists")
        status = hit.status_at(now)
        if hit.disposed or hit.reviewing or hit.expiration <= now:
            state = "Expired" if status != HIT.Status.DISPOSED and hit.expiration <= now else status
            raise errors.RequestError(
                f"This HIT is currently in the state '{state}'. This operation can be called for a HIT that is "
                f"Assignable, Unassignable or Reviewable and not expired. {errors._stamp()}",
                "AWS.MechanicalTurk.InvalidHITState")
        total = hit.max_assignments + number
        if hit.max_assignments < 10 <= total:
            raise errors.RequestError(
                f"HIT {hit.hit_id} was created with fewer than 10 assignments and cannot be extended to "
                f"{total}. {errors._stamp()}", "AWS.MechanicalTurk.InvalidMaximumAssignmentsIncrease")
        if total > 1_000_000:
            raise errors.parameter("A HIT can have at most 1000000 assignments.")
        hit.max_assignments = total
        _recount(hit)
        _settle(account, hit, now)  # holds the new slots; raises InsufficientFunds (nothing changes)
        HITExtension.objects.create(account=account, hit=hit, added=number, max_assignments=total,
                                    unique_request_token=unique_request_token or "", request_id=request_id,
                                    created_at=now)
    return hit


# --- Review and payment ----------------------------------------------------------------------

def _lock_assignment(assignment: Assignment) -> tuple[RequesterAccount, HIT, Assignment]:
    account, hit = _lock_hit(assignment.hit.account_id, assignment.hit_id)
    locked = Assignment.objects.select_for_update(of=("self",)).select_related("worker").get(pk=assignment.pk)
    locked.hit = hit
    return account, hit, locked


def assignment_approve(*, assignment: Assignment, feedback: str = "", override_rejection: bool = False) -> Assignment:
    now = clock.now()
    with transaction.atomic():
        account, hit, assignment = _lock_assignment(assignment)
        _approve_locked(account, hit, assignment, now, feedback=feedback, override_rejection=override_rejection)
    return assignment


def _approve_locked(account, hit, assignment, now, *, feedback: str = "", override_rejection: bool = False) -> None:
    cost = money.cost_per_assignment(hit.hit_type.reward, hit.max_assignments)
    if assignment.status == Assignment.Status.SUBMITTED:
        hit.held -= cost  # the held money is paid out
    elif assignment.status == Assignment.Status.REJECTED and override_rejection and not hit.disposed:
        if now - (assignment.rejection_time or now) > timedelta(days=30):
            raise errors.invalid_state("A rejection can be overridden only within 30 days.")
        _move(account, -cost, LedgerEntry.Kind.REWARD, assignment.assignment_id)
    else:
        allowed = "Submitted" + (", Rejected (with OverrideRejection)" if not hit.disposed else "")
        raise errors.invalid_state(f"This operation can be called with a status of: {allowed}")
    assignment.status = Assignment.Status.APPROVED
    assignment.approval_time = now
    assignment.rejection_time = None
    if feedback:
        assignment.requester_feedback = feedback
    assignment.save()
    _recount(hit)
    _settle(account, hit, now)


def assignment_reject(*, assignment: Assignment, feedback: str) -> Assignment:
    now = clock.now()
    with transaction.atomic():
        account, hit, assignment = _lock_assignment(assignment)
        if assignment.status != Assignment.Status.SUBMITTED:
            raise errors.invalid_state("This operation can be called with a status of: Submitted")
        assignment.status = Assignment.Status.REJECTED
        assignment.rejection_time = now
        assignment.requester_feedback = feedback
        assignment.save()
        _recount(hit)
        _settle(account, hit, now)
    return assignment


def bonus_send(*, account: RequesterAccount, assignment: Assignment, worker_id: str, amount: str, reason: str,
               unique_request_token: str = "", request_id: str) -> BonusPayment:
    value = money.parse_amount(amount, field="BonusAmount")
    if assignment.worker.worker_id != worker_id:
        raise errors.RequestError(f"Assignment {assignment.assignment_id} was not done by worker {worker_id}. "
                                  f"{errors._stamp()}", "AWS.MechanicalTurk.AssignmentDoesNotMatchWorker")
    if assignment.status not in Assignment.VISIBLE:
        raise errors.invalid_state("A bonus can be paid only for a submitted, approved or rejected assignment.")
    now = clock.now()
    fee = money.commission(value)
    with transaction.atomic():
        locked = _locked_account(account.pk)
        if unique_request_token:
            earlier = (BonusPayment.objects.filter(account=locked, unique_request_token=unique_request_token,
                                                   grant_time__gt=now - TOKEN_LIFETIME).first())
            if earlier:
                raise errors.RequestError(
                    f"The bonus with this UniqueRequestToken was already paid by request {earlier.request_id}. "
                    f"{errors._stamp()}", "AWS.MechanicalTurk.BonusAlreadyPaid")
        _move(locked, -(value + fee), LedgerEntry.Kind.BONUS, assignment.assignment_id)
        return BonusPayment.objects.create(
            account=locked, assignment=assignment, worker=assignment.worker, amount=value, fee=fee, reason=reason,
            unique_request_token=unique_request_token or "", request_id=request_id, grant_time=now)


# --- Qualifications, blocks, notifications -----------------------------------------------------

def qualification_type_create(*, account: RequesterAccount, name: str, description: str, status: str,
                              keywords: str = "", retry_delay: int | None = None, test: str = "",
                              answer_key: str = "", test_duration: int | None = None,
                              auto_granted: bool = False, auto_granted_value: int | None = None) -> QualificationType:
    if test and not test_duration:
        raise errors.parameter("TestDurationInSeconds is required when a Test is given.")
    if test and auto_granted:
        raise errors.parameter("A QualificationType cannot have both a Test and AutoGranted.")
    if test:
        questions_ = qualtests.parse_test(test)
        if not answer_key:
            raise errors.parameter("This marketplace scores tests automatically: a Test needs an AnswerKey.")
        known = {q.identifier for q in questions_}
        unknown = set(qualtests.parse_answer_key(answer_key)[0]) - known
        if unknown:
            raise errors.parameter(f"The AnswerKey scores questions the Test does not have: {sorted(unknown)}.")
    try:
        with transaction.atomic():
            return QualificationType.objects.create(
                account=account, name=name, description=description, status=status, keywords=keywords or "",
                retry_delay=retry_delay, test=test or "", answer_key=answer_key or "", test_duration=test_duration,
                auto_granted=auto_granted, auto_granted_value=auto_granted_value if auto_granted else None,
                created_at=clock.now())
    except IntegrityError:
        raise errors.RequestError(
            "You have already created a QualificationType with this name. A QualificationType's name must be "
            f"unique among all of the QualificationTypes created by the same user. {errors._stamp()}",
            "AWS.MechanicalTurk.QualificationTypeAlreadyExists") from None


def qualification_associate(*, qualification_type: QualificationType, worker: WorkerProfile,
                            integer_value: int = 1) -> Qualification:
    qual, _ = Qualification.objects.update_or_create(
        qualification_type=qualification_type, worker=worker,
        defaults={"integer_value": integer_value, "status": "Granted", "grant_time": clock.now()})
    return qual


def qualification_disassociate(*, qualification_type: QualificationType, worker: WorkerProfile) -> None:
    deleted, _ = Qualification.objects.filter(qualification_type=qualification_type, worker=worker).delete()
    if not deleted:
        raise errors.RequestError(
            f"You requested a Qualification that does not exist. Worker {worker.worker_id} does not have "
            f"QualificationType {qualification_type.qualification_type_id}. {errors._stamp()}",
            "AWS.MechanicalTurk.QualificationDoesNotExist")


def qualification_request_auto(*, worker: WorkerProfile, qualification_type: QualificationType) -> Qualification:
    """A worker asks for an auto-granted qualification and gets it at once."""
    if not qualification_type.auto_granted or qualification_type.status != "Active":
        raise WorkerError("This qualification is not granted automatically; its requester grants it.")
    qual, _ = Qualification.objects.get_or_create(
        qualification_type=qualification_type, worker=worker,
        defaults={"integer_value": qualification_type.auto_granted_value if qualification_type.auto_granted_value
                  is not None else 1, "grant_time": clock.now()})
    return qual


def qualification_take_test(*, worker: WorkerProfile, qualification_type: QualificationType,
                            answers: dict[str, str]) -> Qualification:
    """Score a worker's test answers with the AnswerKey and grant the qualification with that value.

    A worker may take the test again only when the type has a RetryDelayInSeconds and it has passed.
    """
    if not qualification_type.test or qualification_type.status != "Active":
        raise WorkerError("This qualification has no test to take.")
    now = clock.now()
    with transaction.atomic():
        held = (Qualification.objects.select_for_update()
                .filter(qualification_type=qualification_type, worker=worker).first())
        if held is not None:
            delay = qualification_type.retry_delay
            if delay is None:
                raise WorkerError("You have taken this test already; it cannot be retaken.")
            if now < held.grant_time + timedelta(seconds=delay):
                raise WorkerError("You can retake this test later.")
        value = qualtests.score(qualification_type.answer_key, answers)
        qual, _ = Qualification.objects.update_or_create(
            qualification_type=qualification_type, worker=worker,
            defaults={"integer_value": value, "status": "Granted", "grant_time": now})
    return qual


def worker_block_create(*, account: RequesterAccount, worker: WorkerProfile, reason: str) -> None:
    WorkerBlock.objects.update_or_create(account=account, worker=worker,
                                         defaults={"reason": reason, "created_at": clock.now()})


def worker_block_delete(*, account: RequesterAccount, worker: WorkerProfile) -> None:
    WorkerBlock.objects.filter(account=account, worker=worker).delete()


def workers_notify(*, account: RequesterAccount, subject: str, message: str, worker_ids: list[str]) -> list[dict]:
    """Deliver a message to each worker who has worked for ``account``; the rest fail as MTurk's do."""
    known = {w.worker_id: w for w in WorkerProfile.objects.filter(worker_id__in=worker_ids)}
    worked = set(Assignment.objects.filter(hit__account=account, worker__worker_id__in=worker_ids)
                 .values_list("worker__worker_id", flat=True))
    members = set(account.workers.filter(worker_id__in=worker_ids).values_list("worker_id", flat=True))
    failures, notes, now = [], [], clock.now()
    for worker_id in dict.fromkeys(worker_ids):
        worker = known.get(worker_id)
        if worker is None or (worker_id not in worked and worker_id not in members):
            failures.append({"NotifyWorkersFailureCode": "HardFailure", "WorkerId": worker_id,
                             "NotifyWorkersFailureMessage": f"Cannot notify worker {worker_id}: the worker does not "
                                                            "exist or has never worked for you."})
            continue
        notes.append(WorkerNotification(account=account, worker=worker, subject=subject, message=message,
                                        created_at=now))
    WorkerNotification.objects.bulk_create(notes)
    return failures


# --- Time-driven transitions -------------------------------------------------------------------

CATCH_UP_LIMIT = 1000
_overdue_of_account = PreparedQuery(
    lambda account_id, now: Assignment.objects.filter(
        hit__account_id=account_id, status=Assignment.Status.ACCEPTED, deadline__lte=now)
    .values_list("pk", "hit__account_id", "hit_id")[:CATCH_UP_LIMIT], int, datetime)
_due_of_account = PreparedQuery(
    lambda account_id, now: Assignment.objects.filter(
        hit__account_id=account_id, status=Assignment.Status.SUBMITTED, auto_approval_time__lte=now)
    .values_list("pk", "hit__account_id", "hit_id")[:CATCH_UP_LIMIT], int, datetime)
_expired_of_account = PreparedQuery(
    lambda account_id, now: HIT.objects.filter(account_id=account_id, open_for_work=True, expiration__lte=now)
    .values_list("pk", "account_id")[:CATCH_UP_LIMIT], int, datetime)


def catch_up(*, account_id: int | None = None, limit: int = CATCH_UP_LIMIT) -> dict:
    """Apply what time has made due: abandon overdue accepted work, auto-approve, close expired HITs.

    Run lazily before reads and by the periodic Celery task; each step re-checks under locks,
    so running it twice or concurrently changes nothing twice.
    """
    now = clock.now()
    scope = Q(hit__account_id=account_id) if account_id else Q()
    done = {"abandoned": 0, "approved": 0, "closed": 0}
    if account_id and limit == CATCH_UP_LIMIT:  # before each time-dependent API call: compiled once
        overdue = _overdue_of_account.all(account_id, now)
        due = _due_of_account.all(account_id, now)
        expired = _expired_of_account.all(account_id, now)
    else:
        overdue = list(Assignment.objects.filter(scope, status=Assignment.Status.ACCEPTED, deadline__lte=now)
                       .values_list("pk", "hit__account_id", "hit_id")[:limit])
        due = list(Assignment.objects.filter(scope, status=Assignment.Status.SUBMITTED, auto_approval_time__lte=now)
                   .values_list("pk", "hit__account_id", "hit_id")[:limit])
        expired = list(HIT.objects.filter(Q(account_id=account_id) if account_id else Q(), open_for_work=True,
                                          expiration__lte=now).values_list("pk", "account_id")[:limit])
    for pk, acct, hit_pk in overdue:
        with transaction.atomic():
            account, hit = _lock_hit(acct, hit_pk)
            if Assignment.objects.filter(pk=pk, status=Assignment.Status.ACCEPTED, deadline__lte=now).update(
                    status=Assignment.Status.ABANDONED):
                _recount(hit)
                _settle(account, hit, now)
                done["abandoned"] += 1
    for pk, acct, hit_pk in due:
        with transaction.atomic():
            account, hit = _lock_hit(acct, hit_pk)
            assignment = Assignment.objects.select_for_update().get(pk=pk)
            if assignment.status == Assignment.Status.SUBMITTED:
                _approve_locked(account, hit, assignment, now)
                done["approved"] += 1
    for hit_pk, acct in expired:
        with transaction.atomic():
            account, hit = _lock_hit(acct, hit_pk)
            if hit.open_for_work and hit.expiration <= now:
                _settle(account, hit, now)
                done["closed"] += 1
    return done


# --- Workers -----------------------------------------------------------------------------------

def worker_sign_up(*, username: str, password: str, email: str = "", country: str = "US",
                   invite_code: str = "") -> WorkerProfile:
    User = get_user_model()
    with transaction.atomic():
        invite = None
        if invite_code:
            invite = WorkerInvite.objects.select_for_update().filter(code=invite_code, uses_left__gt=0).first()
            if invite is None:
                raise WorkerError("This invitation code is not valid or has been used up.")
        user = User.objects.create_user(username=username, password=password, email=email)
        profile = WorkerProfile.objects.create(user=user, country=country.upper()[:2] or "US")
        if invite:
            _use_invite(invite, profile)
    return profile


def _use_invite(invite: WorkerInvite, profile: WorkerProfile) -> None:
    profile.requesters.add(invite.account)
    invite.uses_left -= 1
    invite.save(update_fields=["uses_left"])


def worker_invite_redeem(*, worker: WorkerProfile, code: str) -> RequesterAccount:
    with transaction.atomic():
        invite = WorkerInvite.objects.select_for_update().filter(code=code, uses_left__gt=0).first()
        if invite is None:
            raise WorkerError("This invitation code is not valid or has been used up.")
        if not worker.requesters.filter(pk=invite.account_id).exists():
            _use_invite(invite, worker)
        return invite.account


def worker_invite_create(*, account: RequesterAccount, uses: int = 1) -> WorkerInvite:
    return WorkerInvite.objects.create(account=account, uses_left=uses)


def assignment_accept(*, worker: WorkerProfile, hit_id: str, skip_locked: bool = False) -> Assignment:
    """Give ``worker`` one assignment of the HIT, or raise ``WorkerError`` with the reason.

    ``skip_locked``: if another accept holds the HIT's row, give up at once (``HITBusy``) instead
    of waiting for it; ``assignment_accept_next`` then tries the group's next HIT.
    """
    from crowd.marketplace import selectors  # selectors read; services write

    now = clock.now()
    with transaction.atomic():
        hit = (HIT.objects.select_for_update(of=("self",), skip_locked=skip_locked)
               .select_related("hit_type").filter(hit_id=hit_id).first())
        if hit is None and skip_locked and HIT.objects.filter(hit_id=hit_id).exists():
            raise HITBusy("Another worker is accepting this HIT right now.")
        if hit is None or not selectors.worker_can_see_account(worker=worker, account_id=hit.account_id):
            raise WorkerError("This HIT does not exist or is not offered to you.")
        return _accept_locked(worker, hit, now)


_HIT_COUNTS = ("num_pending", "num_submitted", "num_completed", "num_available")


def _accept_locked(worker: WorkerProfile, hit: HIT, now) -> Assignment:
    """The rest of an accept, inside its transaction, once the HIT's row is locked and the worker
    is known to see its requester."""
    from crowd.marketplace import selectors

    if "Accept" not in selectors.worker_actions(worker=worker, hit_type=hit.hit_type):
        raise WorkerError("You do not meet the qualification requirements to accept this HIT.")
    if hit.disposed or hit.reviewing or hit.expiration <= now:
        raise WorkerError("This HIT is no longer available.")
    # One query: the HIT's counts (exact under its row lock) and whether this worker holds it.
    if _recount(hit, worker=worker):
        raise WorkerError("You have already accepted or done this HIT; each worker may do it once.")
    if hit.num_available <= 0:
        raise WorkerError("All assignments of this HIT are taken. Try another HIT.")
    try:
        # No savepoint: an error here ends the whole transaction, which is rolled back.
        assignment = save_new(Assignment(
            hit=hit, worker=worker, accept_time=now,
            deadline=now + timedelta(seconds=hit.hit_type.assignment_duration)))
    except IntegrityError:  # the one-per-worker constraint, should a lock ever be bypassed
        raise WorkerError("You have already accepted or done this HIT; each worker may do it once.") from None
    _grant_auto_qualifications(worker, hit.hit_type)
    # Every change of an assignment's state happens under this row lock, so the counts just
    # taken plus the one new pending assignment are the counts.
    hit.num_pending += 1
    hit.num_available -= 1
    save_fields(hit, _HIT_COUNTS)
    return assignment


def _grant_auto_qualifications(worker: WorkerProfile, hit_type: HITType) -> None:
    qtids = [r["QualificationTypeId"] for r in hit_type.qualification_requirements]
    if not qtids:  # most groups ask for none: no query to build
        return
    for qtype in QualificationType.objects.filter(qualification_type_id__in=qtids, auto_granted=True):
        Qualification.objects.get_or_create(
            qualification_type=qtype, worker=worker,
            defaults={"integer_value": qtype.auto_granted_value if qtype.auto_granted_value is not None else 1,
                      "grant_time": clock.now()})


def assignment_accept_next(*, worker: WorkerProfile, hit_type_id: str, tries: int = 20) -> Assignment:
    """Accept the next HIT of a group that still has a slot for this worker."""
    from crowd.marketplace import selectors

    # Workers arriving together all ask for the group's first open HIT: each skips a HIT whose row
    # another accept holds and takes the next, instead of queueing on one lock. One statement
    # finds and locks the first free candidate (the group's open HITs of requesters the worker
    # sees, not done by them: the same visibility check an accept by id makes). Only when every
    # candidate is busy does it wait its turn, so a free slot is never reported as none.
    tried: list[int] = []
    while len(tried) < tries:
        try:
            with transaction.atomic():
                if tried:
                    hit = (selectors.group_candidates(worker=worker, hit_type_id=hit_type_id).exclude(pk__in=tried)
                           .select_for_update(of=("self",), skip_locked=True).select_related("hit_type").first())
                else:  # the usual case, from SQL compiled once
                    group = selectors.hit_type_pk(hit_type_id)
                    hit = (selectors.first_free_candidate.first(worker.pk, group, clock.now())
                           if group is not None else None)
                if hit is None:
                    break
                tried.append(hit.pk)
                return _accept_locked(worker, hit, clock.now())
        except WorkerError:
            continue
    else:
        raise WorkerError("There are no more HITs in this group for you.")
    busy = selectors.group_candidate_hit_ids(worker=worker, hit_type_id=hit_type_id, limit=tries - len(tried),
                                             exclude=tried)
    for hit_id in busy:
        try:
            return assignment_accept(worker=worker, hit_id=hit_id)
        except WorkerError:
            continue
    raise WorkerError("There are no more HITs in this group for you.")


def assignment_return(*, worker: WorkerProfile, assignment_id: str) -> None:
    now = clock.now()
    assignment = (Assignment.objects.select_related("hit").filter(assignment_id=assignment_id, worker=worker).first())
    if assignment is None:
        raise WorkerError("This assignment does not exist.")
    with transaction.atomic():
        account, hit, assignment = _lock_assignment(assignment)
        if assignment.status != Assignment.Status.ACCEPTED:
            raise WorkerError("Only work in progress can be returned.")
        assignment.status = Assignment.Status.RETURNED
        assignment.save(update_fields=["status"])
        _recount(hit)
        _settle(account, hit, now)


def answer_xml(fields: list[tuple[str, str]]) -> str:
    """The posted form fields as MTurk's QuestionFormAnswers document."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<QuestionFormAnswers xmlns="{ANSWER_NS}">']
    for name, value in fields:
        parts.append(f"<Answer><QuestionIdentifier>{escape(name)}</QuestionIdentifier>"
                     f"<FreeText>{escape(value)}</FreeText></Answer>")
    parts.append("</QuestionFormAnswers>")
    return "".join(parts)


def assignment_submit(*, worker: WorkerProfile, assignment_id: str, fields: list[tuple[str, str]]) -> Assignment:
    """Record the externalSubmit form of an assignment ``worker`` holds, exactly once."""
    if assignment_id == "ASSIGNMENT_ID_NOT_AVAILABLE":
        raise WorkerError("This is a preview: accept the HIT before submitting work.")
    now = clock.now()
    with transaction.atomic():
        # Lock order as everywhere: HIT row first, then the assignment. One query finds the HIT of
        # the worker's assignment and locks it.
        hit = _submit_hit.first(assignment_id, worker.pk)
        if hit is None:
            raise WorkerError("This assignment is not yours, or does not exist.")
        assignment = _submit_assignment.first(assignment_id, worker.pk)
        if assignment is None:  # found through the HIT's join a moment ago, and locked since
            raise WorkerError("This assignment is not yours, or does not exist.")
        assignment.hit = hit
        if assignment.status == Assignment.Status.SUBMITTED or assignment.status in (
                Assignment.Status.APPROVED, Assignment.Status.REJECTED):
            raise WorkerError("This assignment was already submitted; it was recorded once.")
        if assignment.status != Assignment.Status.ACCEPTED or assignment.deadline <= now:
            raise WorkerError("This assignment is no longer yours: it was returned or its time ran out.")
        assignment.status = Assignment.Status.SUBMITTED
        assignment.submit_time = now
        assignment.auto_approval_time = now + timedelta(seconds=hit.hit_type.auto_approval_delay)
        assignment.answer = answer_xml([(k, v) for k, v in fields if k != "assignmentId"])
        save_fields(assignment, ("status", "submit_time", "auto_approval_time", "answer"))
        # Under the HIT's row lock every state change is counted: one pending became submitted.
        hit.num_pending = max(0, hit.num_pending - 1)
        hit.num_submitted += 1
        save_fields(hit, _HIT_COUNTS)
    return assignment


# The two row locks of every submit, compiled once per process.
_submit_hit = PreparedQuery(
    lambda assignment_id, worker_id: HIT.objects.select_for_update(of=("self",)).select_related("hit_type")
    .filter(assignments__assignment_id=assignment_id, assignments__worker_id=worker_id).order_by()[:1],
    str, int)
_submit_assignment = PreparedQuery(
    lambda assignment_id, worker_id: Assignment.objects.select_for_update()
    .filter(assignment_id=assignment_id, worker_id=worker_id).order_by()[:1],
    str, int)


def notification_mark_read(*, worker: WorkerProfile) -> None:
    WorkerNotification.objects.filter(worker=worker, read_at__isnull=True).update(read_at=clock.now())
