"""The one boto3 adapter for MTurk and MTurk-compatible endpoints (our marketplace by default).

``client_for(project)`` builds (and caches per process) a botocore client from settings:
MTURK_ENDPOINT_URL, the project's ``ProviderCredentials`` or AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, and botocore's own retries (``standard`` or ``adaptive`` mode, with
MTURK_MAX_ATTEMPTS), which already back off with jitter on ThrottlingException, 5xx
(ServiceFault) and dropped connections. What is still failing after that is raised as
``TransientProviderError`` so that Celery retries the task later (``autoretry_for``).
"""
from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore import xform_name
from django.conf import settings

from crowd.providers.base import (
    Agent,
    AlreadyExists,
    CrowdProvider,
    InvalidState,
    NotFound,
    ProviderError,
    TransientProviderError,
    Unit,
    UnitType,
)

_THROTTLE_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
_ENTITY_ID = re.compile(r"\b([A-Z0-9]{20,64})\b")
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def _money(value: Decimal) -> str:
    return f"{Decimal(value).quantize(Decimal('0.01'))}"


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def retry_config() -> Config:
    return Config(
        retries={"mode": settings.MTURK_RETRY_MODE, "max_attempts": settings.MTURK_MAX_ATTEMPTS},
        connect_timeout=settings.MTURK_CONNECT_TIMEOUT,
        read_timeout=settings.MTURK_READ_TIMEOUT,
        max_pool_connections=20,
        user_agent_appid="annotator-crowd",
    )


def credentials_for(project: Any | None) -> tuple[str, str, str]:
    """(endpoint, access key id, secret) for a project: its own credentials, else the settings'."""
    from crowd import crypto
    from crowd.models import ProviderCredentials

    endpoint = settings.MTURK_ENDPOINT_URL
    key, secret = settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY
    if project is not None:
        creds = ProviderCredentials.objects.filter(project_id=getattr(project, "pk", project)).first()
        if creds is not None:
            endpoint = creds.endpoint_url or endpoint
            key, secret = creds.access_key_id, crypto.decrypt(creds.secret_encrypted)
    if not key or not secret:
        raise ProviderError(
            "No requester credentials: add ProviderCredentials to the project or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (for our marketplace: manage.py create_requester_key USERNAME).",
            code="NoCredentials",
        )
    return endpoint, key, secret


def client_for(project: Any | None = None):
    endpoint, key, secret = credentials_for(project)
    cache_key = (endpoint, key, secret, settings.MTURK_RETRY_MODE, settings.MTURK_MAX_ATTEMPTS,
                 settings.MTURK_READ_TIMEOUT)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            client = boto3.session.Session().client(
                "mturk",
                endpoint_url=endpoint,
                region_name=settings.MTURK_REGION_NAME,
                aws_access_key_id=key,
                aws_secret_access_key=secret,
                config=retry_config(),
            )
            _clients[cache_key] = client
    return client


def reset_clients() -> None:
    """Forget cached clients (after settings or credentials change; tests)."""
    with _clients_lock:
        _clients.clear()


def _translate(exc: Exception, operation: str) -> ProviderError:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        turk = exc.response.get("TurkErrorCode") or ""
        message = err.get("Message", "") or str(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _THROTTLE_CODES or code == "ServiceFault" or status >= 500:
            return TransientProviderError(f"{operation}: {code}: {message}", code=code, operation=operation)
        full = turk or code
        lowered = message.lower()
        if full.endswith("AlreadyExists") or full.endswith("AlreadyPaid") or (
            "uniquerequesttoken" in lowered and "already" in lowered
        ):
            found = _ENTITY_ID.search(message)
            return AlreadyExists(message, code=full, operation=operation, existing_id=found.group(1) if found else "")
        if full.endswith("DoesNotExist") or "does not exist" in lowered or (
            full.endswith("InvalidHITState") and "state 'disposed'" in lowered
        ):
            # A deleted (disposed) HIT: gone, whichever way the service words it.
            return NotFound(message, code=full, operation=operation)
        if full.endswith("InvalidAssignmentState") or full.endswith("InvalidHITState") or (
            "status of" in lowered
        ):
            return InvalidState(message, code=full, operation=operation)
        return ProviderError(f"{operation}: {full}: {message}", code=full, operation=operation)
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)):
        return TransientProviderError(f"{operation}: {exc}", code=type(exc).__name__, operation=operation)
    if isinstance(exc, BotoCoreError):
        return TransientProviderError(f"{operation}: {exc}", code=type(exc).__name__, operation=operation)
    return ProviderError(f"{operation}: {exc}", operation=operation)


def _unit(h: dict) -> Unit:
    return Unit(
        id=h["HITId"], type_id=h.get("HITTypeId", ""), status=h.get("HITStatus", ""),
        max_assignments=int(h.get("MaxAssignments") or 0), annotation=h.get("RequesterAnnotation", "") or "",
        expiration=_dt(h.get("Expiration")), pending=int(h.get("NumberOfAssignmentsPending") or 0),
        available=int(h.get("NumberOfAssignmentsAvailable") or 0),
        completed=int(h.get("NumberOfAssignmentsCompleted") or 0),
    )


def _agent(a: dict) -> Agent:
    return Agent(
        id=a["AssignmentId"], worker_id=a.get("WorkerId", ""), unit_id=a.get("HITId", ""),
        status=a.get("AssignmentStatus", ""), answer_xml=a.get("Answer", "") or "",
        submitted_at=_dt(a.get("SubmitTime")), feedback=a.get("RequesterFeedback", "") or "",
    )


class MTurkProvider(CrowdProvider):
    """MTurk's requester API through one boto3 client."""

    name = "mturk"

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def for_project(cls, project: Any | None = None) -> "MTurkProvider":
        return cls(client_for(project))

    def _call(self, operation: str, fn: Callable[..., Any], **params: Any) -> Any:
        try:
            return fn(**params)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, operation) from exc

    def _pages(self, operation: str, result_key: str, **params: Any) -> Iterator[dict]:
        paginator = self.client.get_paginator(xform_name(operation))
        try:
            for page in paginator.paginate(**params, PaginationConfig={"PageSize": 100}):
                yield from page.get(result_key, [])
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, operation) from exc

    # --- requester ---
    def balance(self) -> Decimal:
        out = self._call("GetAccountBalance", self.client.get_account_balance)
        return Decimal(str(out.get("AvailableBalance", "0")))

    # --- units ---
    def unit_type_register(self, unit_type: UnitType) -> str:
        params: dict[str, Any] = {
            "Title": unit_type.title, "Description": unit_type.description, "Keywords": unit_type.keywords,
            "Reward": _money(unit_type.reward), "AssignmentDurationInSeconds": unit_type.assignment_duration_s,
            "AutoApprovalDelayInSeconds": unit_type.auto_approval_delay_s,
        }
        if unit_type.requirements:
            reqs = []
            for r in unit_type.requirements:
                req: dict[str, Any] = {"QualificationTypeId": r.qualification_type_id, "Comparator": r.comparator,
                                       "ActionsGuarded": "DiscoverPreviewAndAccept"}
                if r.integer_values:
                    req["IntegerValues"] = r.integer_values
                if r.locale_values:
                    req["LocaleValues"] = r.locale_values
                reqs.append(req)
            params["QualificationRequirements"] = reqs
        return self._call("CreateHITType", self.client.create_hit_type, **params)["HITTypeId"]

    def unit_create(
        self, *, type_id: str, question: str, max_assignments: int, lifetime_s: int, annotation: str, token: str
    ) -> Unit:
        out = self._call(
            "CreateHITWithHITType", self.client.create_hit_with_hit_type, HITTypeId=type_id,
            MaxAssignments=max_assignments, LifetimeInSeconds=lifetime_s, Question=question,
            RequesterAnnotation=annotation, UniqueRequestToken=token,
        )
        return _unit(out["HIT"])

    def unit_get(self, unit_id: str) -> Unit:
        return _unit(self._call("GetHIT", self.client.get_hit, HITId=unit_id)["HIT"])

    def units_reviewable(self, *, type_id: str) -> Iterator[Unit]:
        for h in self._pages("ListReviewableHITs", "HITs", HITTypeId=type_id, Status="Reviewable"):
            yield _unit(h)

    def units_all(self) -> Iterator[Unit]:
        for h in self._pages("ListHITs", "HITs"):
            yield _unit(h)

    def unit_set_expiration(self, unit_id: str, expire_at: datetime) -> None:
        self._call("UpdateExpirationForHIT", self.client.update_expiration_for_hit, HITId=unit_id, ExpireAt=expire_at)

    def unit_delete(self, unit_id: str) -> None:
        self._call("DeleteHIT", self.client.delete_hit, HITId=unit_id)

    def unit_add_assignments(self, unit_id: str, number: int, *, token: str) -> None:
        self._call("CreateAdditionalAssignmentsForHIT", self.client.create_additional_assignments_for_hit,
                   HITId=unit_id, NumberOfAdditionalAssignments=number, UniqueRequestToken=token)

    # --- agents ---
    def agents_for_unit(self, unit_id: str) -> Iterator[Agent]:
        for a in self._pages("ListAssignmentsForHIT", "Assignments", HITId=unit_id,
                             AssignmentStatuses=["Submitted", "Approved", "Rejected"]):
            yield _agent(a)

    def agent_get(self, agent_id: str) -> tuple[Agent, Unit]:
        out = self._call("GetAssignment", self.client.get_assignment, AssignmentId=agent_id)
        return _agent(out["Assignment"]), _unit(out["HIT"])

    def agent_approve(self, agent_id: str, feedback: str) -> None:
        params = {"AssignmentId": agent_id}
        if feedback:
            params["RequesterFeedback"] = feedback[:1024]
        self._call("ApproveAssignment", self.client.approve_assignment, **params)

    def agent_reject(self, agent_id: str, feedback: str) -> None:
        self._call("RejectAssignment", self.client.reject_assignment, AssignmentId=agent_id,
                   RequesterFeedback=(feedback or "Rejected.")[:1024])

    # --- workers ---
    def worker_bonus(self, *, worker_id: str, agent_id: str, amount: Decimal, reason: str, token: str) -> None:
        self._call("SendBonus", self.client.send_bonus, WorkerId=worker_id, AssignmentId=agent_id,
                   BonusAmount=_money(amount), Reason=reason, UniqueRequestToken=token)

    def worker_bonuses_for(self, agent_id: str) -> list[dict[str, Any]]:
        return list(self._pages("ListBonusPayments", "BonusPayments", AssignmentId=agent_id))

    def worker_block(self, worker_id: str, reason: str) -> None:
        self._call("CreateWorkerBlock", self.client.create_worker_block, WorkerId=worker_id, Reason=reason)

    def workers_notify(self, worker_ids: list[str], subject: str, text: str) -> dict[str, str]:
        failures: dict[str, str] = {}
        for start in range(0, len(worker_ids), 100):  # NotifyWorkers takes at most 100 ids
            out = self._call("NotifyWorkers", self.client.notify_workers, Subject=subject[:200],
                             MessageText=text[:4096], WorkerIds=worker_ids[start:start + 100])
            for f in out.get("NotifyWorkersFailureStatuses", []):
                failures[f.get("WorkerId", "")] = f.get("NotifyWorkersFailureMessage", "")
        return failures

    def qualification_type_create(self, *, name: str, description: str) -> str:
        try:
            out = self._call("CreateQualificationType", self.client.create_qualification_type, Name=name,
                             Description=description, Keywords="training,annotator",
                             QualificationTypeStatus="Active", AutoGranted=False)
            return out["QualificationType"]["QualificationTypeId"]
        except (AlreadyExists, ProviderError) as exc:
            if not isinstance(exc, AlreadyExists) and "already" not in str(exc).lower():
                raise
            # Created by an earlier call whose answer we lost: find it by its (unique) name.
            for q in self._pages("ListQualificationTypes", "QualificationTypes", Query=name,
                                 MustBeRequestable=False, MustBeOwnedByCaller=True):
                if q.get("Name") == name:
                    return q["QualificationTypeId"]
            raise

    def qualification_grant(self, *, qualification_type_id: str, worker_id: str, value: int) -> None:
        self._call("AssociateQualificationWithWorker", self.client.associate_qualification_with_worker,
                   QualificationTypeId=qualification_type_id, WorkerId=worker_id, IntegerValue=value,
                   SendNotification=True)
