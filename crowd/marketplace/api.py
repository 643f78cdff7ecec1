"""The Requester API's operations: wire parameters in, one service or selector call, wire shape out.

Each handler takes the authenticated requester's account and the already shape-validated
parameters, and returns a plain dict in the operation's output shape (datetimes and Decimals are
converted by ``shapes.to_wire``).
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from crowd.marketplace import clock, errors, money, selectors, services
from crowd.marketplace.models import HIT, Assignment, QualificationType, RequesterAccount


# MTurk's documented lengths, which botocore's service model does not carry.
MAX_LENGTHS = {"Title": 128, "Description": 2000, "Keywords": 1000, "RequesterAnnotation": 255,
               "RequesterFeedback": 1024, "Reason": 1024, "Name": 255}


def check_lengths(params: dict) -> None:
    for name, limit in MAX_LENGTHS.items():
        value = params.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise errors.parameter(f"{name} is {len(value)} characters long; the limit is {limit}.")


def _hit_out(hit: HIT, now) -> dict:
    t = hit.hit_type
    out = {
        "HITId": hit.hit_id,
        "HITTypeId": t.hit_type_id,
        "HITGroupId": t.hit_type_id,
        "CreationTime": hit.created_at,
        "Title": t.title,
        "Description": t.description,
        "Question": hit.question,
        "Keywords": t.keywords,
        "HITStatus": hit.status_at(now),
        "MaxAssignments": hit.max_assignments,
        "Reward": money.format_amount(t.reward),
        "AutoApprovalDelayInSeconds": t.auto_approval_delay,
        "Expiration": hit.expiration,
        "AssignmentDurationInSeconds": t.assignment_duration,
        "QualificationRequirements": t.qualification_requirements,
        "HITReviewStatus": "NotReviewed",
        "NumberOfAssignmentsPending": hit.num_pending,
        "NumberOfAssignmentsAvailable": hit.num_available if hit.expiration > now and not hit.disposed else 0,
        "NumberOfAssignmentsCompleted": hit.num_completed,
    }
    if hit.requester_annotation:
        out["RequesterAnnotation"] = hit.requester_annotation
    return out


def _assignment_out(a: Assignment) -> dict:
    return {
        "AssignmentId": a.assignment_id,
        "WorkerId": a.worker.worker_id,
        "HITId": a.hit.hit_id,
        "AssignmentStatus": a.status,
        "AutoApprovalTime": a.auto_approval_time,
        "AcceptTime": a.accept_time,
        "SubmitTime": a.submit_time,
        "ApprovalTime": a.approval_time,
        "RejectionTime": a.rejection_time,
        "Deadline": a.deadline,
        "Answer": a.answer,
        "RequesterFeedback": a.requester_feedback or None,
    }


def _qualification_type_out(q: QualificationType) -> dict:
    out = {
        "QualificationTypeId": q.qualification_type_id,
        "CreationTime": q.created_at,
        "Name": q.name,
        "Description": q.description,
        "Keywords": q.keywords or None,
        "QualificationTypeStatus": q.status,
        "RetryDelayInSeconds": q.retry_delay,
        "Test": q.test or None,
        "TestDurationInSeconds": q.test_duration,
        "AnswerKey": q.answer_key or None,
        "AutoGranted": q.auto_granted,
        "AutoGrantedValue": q.auto_granted_value,
        "IsRequestable": bool(q.test or q.auto_granted),
    }
    return out


def _page_out(page, key: str, items: list) -> dict:
    out = {key: items, "NumResults": len(items)}
    if page.next_token:
        out["NextToken"] = page.next_token
    return out


def _hit_type_from(account: RequesterAccount, p: dict):
    return services.hit_type_get_or_create(
        account=account, title=p["Title"], description=p["Description"], reward=p["Reward"],
        assignment_duration=p["AssignmentDurationInSeconds"], auto_approval_delay=p.get("AutoApprovalDelayInSeconds"),
        keywords=p.get("Keywords", ""), qualification_requirements=p.get("QualificationRequirements"))


def _new_hit(account: RequesterAccount, hit_type, p: dict) -> dict:
    if p.get("HITLayoutId"):
        raise errors.RequestError(f"HIT layouts are not supported by this marketplace; pass a Question. "
                                  f"{errors._stamp()}", "AWS.MechanicalTurk.HITLayoutDoesNotExist")
    if not p.get("Question"):
        raise errors.RequestError(f"Either Question or HITLayoutId must be provided. {errors._stamp()}",
                                  "AWS.MechanicalTurk.InvalidParameterValue")
    def create():
        return services.hit_create(
            account=account, hit_type=hit_type, question=p["Question"], lifetime=p["LifetimeInSeconds"],
            max_assignments=p.get("MaxAssignments", 1), requester_annotation=p.get("RequesterAnnotation", ""),
            unique_request_token=p.get("UniqueRequestToken", ""))

    try:
        hit = create()
    except errors.RequestError as exc:
        if exc.turk_error_code != "AWS.MechanicalTurk.InsufficientFunds":
            raise
        # Money of expired HITs may not be released yet (creating skips the catch-up): do it, retry.
        services.catch_up(account_id=account.pk)
        hit = create()
    hit.hit_type = hit_type
    return {"HIT": _hit_out(hit, clock.now())}


def create_hit_type(account, p, ctx):
    return {"HITTypeId": _hit_type_from(account, p).hit_type_id}


def create_hit(account, p, ctx):
    return _new_hit(account, _hit_type_from(account, p), p)


def create_hit_with_hit_type(account, p, ctx):
    return _new_hit(account, selectors.hit_type_for_requester(account=account, hit_type_id=p["HITTypeId"]), p)


def get_hit(account, p, ctx):
    return {"HIT": _hit_out(selectors.hit_for_requester(account=account, hit_id=p["HITId"]), clock.now())}


def list_hits(account, p, ctx):
    page = selectors.hits_page(account=account, token=p.get("NextToken"), max_results=p.get("MaxResults"))
    now = clock.now()
    return _page_out(page, "HITs", [_hit_out(h, now) for h in page.items])


def list_reviewable_hits(account, p, ctx):
    page = selectors.reviewable_hits_page(account=account, status=p.get("Status"), hit_type_id=p.get("HITTypeId"),
                                          token=p.get("NextToken"), max_results=p.get("MaxResults"))
    now = clock.now()
    return _page_out(page, "HITs", [_hit_out(h, now) for h in page.items])


def update_hit_review_status(account, p, ctx):
    hit = selectors.hit_for_requester(account=account, hit_id=p["HITId"])
    services.hit_update_review_status(hit=hit, revert=bool(p.get("Revert", False)))
    return {}


def update_expiration_for_hit(account, p, ctx):
    hit = selectors.hit_for_requester(account=account, hit_id=p["HITId"])
    expire_at = p["ExpireAt"]
    if not isinstance(expire_at, datetime):
        expire_at = datetime.fromtimestamp(float(expire_at), tz=timezone.utc)
    services.hit_update_expiration(hit=hit, expire_at=expire_at)
    return {}


def create_additional_assignments_for_hit(account, p, ctx):
    hit = selectors.hit_for_requester(account=account, hit_id=p["HITId"])

    def extend():
        services.hit_add_assignments(hit=hit, number=p["NumberOfAdditionalAssignments"],
                                     unique_request_token=p.get("UniqueRequestToken", ""),
                                     request_id=ctx["request_id"])

    try:
        extend()
    except errors.RequestError as exc:
        if exc.turk_error_code != "AWS.MechanicalTurk.InsufficientFunds":
            raise
        services.catch_up(account_id=account.pk)  # as CreateHIT: release expired HITs' money, retry
        extend()
    return {}


def delete_hit(account, p, ctx):
    services.hit_delete(hit=selectors.hit_for_requester(account=account, hit_id=p["HITId"]))
    return {}


def list_assignments_for_hit(account, p, ctx):
    hit = selectors.hit_for_requester(account=account, hit_id=p["HITId"])
    page = selectors.assignments_page(hit=hit, statuses=p.get("AssignmentStatuses"), token=p.get("NextToken"),
                                      max_results=p.get("MaxResults"))
    for a in page.items:
        a.hit = hit
    return _page_out(page, "Assignments", [_assignment_out(a) for a in page.items])


def get_assignment(account, p, ctx):
    a = selectors.assignment_for_requester(account=account, assignment_id=p["AssignmentId"])
    return {"Assignment": _assignment_out(a), "HIT": _hit_out(a.hit, clock.now())}


def approve_assignment(account, p, ctx):
    a = selectors.assignment_for_requester(account=account, assignment_id=p["AssignmentId"])
    services.assignment_approve(assignment=a, feedback=p.get("RequesterFeedback", ""),
                                override_rejection=bool(p.get("OverrideRejection", False)))
    return {}


def reject_assignment(account, p, ctx):
    a = selectors.assignment_for_requester(account=account, assignment_id=p["AssignmentId"])
    services.assignment_reject(assignment=a, feedback=p["RequesterFeedback"])
    return {}


def send_bonus(account, p, ctx):
    a = selectors.assignment_for_requester(account=account, assignment_id=p["AssignmentId"])
    services.bonus_send(account=account, assignment=a, worker_id=p["WorkerId"], amount=p["BonusAmount"],
                        reason=p["Reason"], unique_request_token=p.get("UniqueRequestToken", ""),
                        request_id=ctx["request_id"])
    return {}


def list_bonus_payments(account, p, ctx):
    if bool(p.get("HITId")) == bool(p.get("AssignmentId")):
        raise errors.RequestError(f"Exactly one of HITId or AssignmentId must be given. {errors._stamp()}",
                                  "AWS.MechanicalTurk.InvalidParameterValue")
    hit = selectors.hit_for_requester(account=account, hit_id=p["HITId"]) if p.get("HITId") else None
    a = (selectors.assignment_for_requester(account=account, assignment_id=p["AssignmentId"])
         if p.get("AssignmentId") else None)
    page = selectors.bonuses_page(account=account, hit=hit, assignment=a, token=p.get("NextToken"),
                                  max_results=p.get("MaxResults"))
    items = [{"WorkerId": b.worker.worker_id, "BonusAmount": money.format_amount(b.amount),
              "AssignmentId": b.assignment.assignment_id, "Reason": b.reason, "GrantTime": b.grant_time}
             for b in page.items]
    return _page_out(page, "BonusPayments", items)


def create_qualification_type(account, p, ctx):
    q = services.qualification_type_create(
        account=account, name=p["Name"], description=p["Description"], status=p["QualificationTypeStatus"],
        keywords=p.get("Keywords", ""), retry_delay=p.get("RetryDelayInSeconds"), test=p.get("Test", ""),
        answer_key=p.get("AnswerKey", ""), test_duration=p.get("TestDurationInSeconds"),
        auto_granted=bool(p.get("AutoGranted", False)), auto_granted_value=p.get("AutoGrantedValue"))
    return {"QualificationType": _qualification_type_out(q)}


def get_qualification_type(account, p, ctx):
    q = selectors.qualification_type_for_requester(account=account, qualification_type_id=p["QualificationTypeId"])
    return {"QualificationType": _qualification_type_out(q)}


def associate_qualification_with_worker(account, p, ctx):
    q = selectors.qualification_type_for_requester(account=account, qualification_type_id=p["QualificationTypeId"])
    worker = selectors.worker_by_id(worker_id=p["WorkerId"])
    services.qualification_associate(qualification_type=q, worker=worker, integer_value=p.get("IntegerValue", 1))
    return {}


def disassociate_qualification_from_worker(account, p, ctx):
    q = selectors.qualification_type_for_requester(account=account, qualification_type_id=p["QualificationTypeId"])
    worker = selectors.worker_by_id(worker_id=p["WorkerId"])
    services.qualification_disassociate(qualification_type=q, worker=worker)
    return {}


def list_workers_with_qualification_type(account, p, ctx):
    q = selectors.qualification_type_for_requester(account=account, qualification_type_id=p["QualificationTypeId"])
    page = selectors.qualifications_page(qualification_type=q, status=p.get("Status"), token=p.get("NextToken"),
                                         max_results=p.get("MaxResults"))
    items = [{"QualificationTypeId": q.qualification_type_id, "WorkerId": g.worker.worker_id,
              "GrantTime": g.grant_time, "IntegerValue": g.integer_value, "Status": g.status} for g in page.items]
    return _page_out(page, "Qualifications", items)


def create_worker_block(account, p, ctx):
    services.worker_block_create(account=account, worker=selectors.worker_by_id(worker_id=p["WorkerId"]),
                                 reason=p["Reason"])
    return {}


def delete_worker_block(account, p, ctx):
    services.worker_block_delete(account=account, worker=selectors.worker_by_id(worker_id=p["WorkerId"]))
    return {}


def list_worker_blocks(account, p, ctx):
    page = selectors.blocks_page(account=account, token=p.get("NextToken"), max_results=p.get("MaxResults"))
    return _page_out(page, "WorkerBlocks", [{"WorkerId": b.worker.worker_id, "Reason": b.reason} for b in page.items])


def notify_workers(account, p, ctx):
    # MTurk's documented limits, which the service model does not carry.
    if not 1 <= len(p["WorkerIds"]) <= 100:
        raise errors.parameter("WorkerIds must name between 1 and 100 workers.")
    if not p["Subject"].strip() or len(p["Subject"]) > 200:
        raise errors.parameter("Subject must be between 1 and 200 characters.")
    if not p["MessageText"].strip() or len(p["MessageText"]) > 4096:
        raise errors.parameter("MessageText must be between 1 and 4096 characters.")
    failures = services.workers_notify(account=account, subject=p["Subject"], message=p["MessageText"],
                                       worker_ids=p["WorkerIds"])
    return {"NotifyWorkersFailureStatuses": failures}


def get_account_balance(account, p, ctx):
    account.refresh_from_db(fields=["balance"])
    return {"AvailableBalance": money.format_amount(account.balance),
            "OnHoldBalance": money.format_amount(selectors.balance_on_hold(account=account) or Decimal("0"))}


HANDLERS = {
    "CreateHITType": create_hit_type,
    "CreateHIT": create_hit,
    "CreateHITWithHITType": create_hit_with_hit_type,
    "GetHIT": get_hit,
    "ListHITs": list_hits,
    "ListReviewableHITs": list_reviewable_hits,
    "UpdateHITReviewStatus": update_hit_review_status,
    "UpdateExpirationForHIT": update_expiration_for_hit,
    "DeleteHIT": delete_hit,
    "CreateAdditionalAssignmentsForHIT": create_additional_assignments_for_hit,
    "ListAssignmentsForHIT": list_assignments_for_hit,
    "GetAssignment": get_assignment,
    "ApproveAssignment": approve_assignment,
    "RejectAssignment": reject_assignment,
    "SendBonus": send_bonus,
    "ListBonusPayments": list_bonus_payments,
    "CreateQualificationType": create_qualification_type,
    "GetQualificationType": get_qualification_type,
    "AssociateQualificationWithWorker": associate_qualification_with_worker,
    "DisassociateQualificationFromWorker": disassociate_qualification_from_worker,
    "ListWorkersWithQualificationType": list_workers_with_qualification_type,
    "CreateWorkerBlock": create_worker_block,
    "DeleteWorkerBlock": delete_worker_block,
    "ListWorkerBlocks": list_worker_blocks,
    "NotifyWorkers": notify_workers,
    "GetAccountBalance": get_account_balance,
}
