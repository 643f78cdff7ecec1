"""A small, independent MTurk requester API on loopback, written from MTurk's API reference.

It speaks the JSON wire protocol boto3 uses (``X-Amz-Target: MTurkRequesterServiceV20170117.Op``,
``application/x-amz-json-1.1``, timestamps as epoch seconds) and behaves like the real service
where a friendly fake would not:

- no assignment exists before a worker accepts a HIT (``accept``), and an accepted one is
  invisible to the requester until it is submitted: ListAssignmentsForHIT returns only
  Submitted / Approved / Rejected ones and GetAssignment answers AssignmentDoesNotExist;
- a HIT becomes Reviewable only when every assignment was submitted or the HIT expired;
- UniqueRequestToken: a repeated CreateHIT answers HitAlreadyExists naming the HIT id; a
  repeated SendBonus is refused (paid once); tokens are forgotten after 24 hours;
- ApproveAssignment / RejectAssignment of an assignment that is not Submitted is refused;
- errors are ``{"__type": ..., "Message": ..., "TurkErrorCode": ...}`` (400 RequestError,
  500 ServiceFault, 400 ThrottlingException).

For tests it counts every call per operation (``calls``) and every effect (``approvals``,
``bonuses``), injects failures for a stretch (``inject``: throttle, 5xx, or "drop" = do the
work, then close the connection without answering, as a timeout after the fact), can hold a
request after its work is done (``hold``) so a client can be killed mid-call, and has its own
clock (``now``). Signatures are not checked.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import json
import re
import secrets
import socket
import string
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

TARGET_PREFIX = "MTurkRequesterServiceV20170117."
TOKEN_TTL = timedelta(hours=24)
_ALPHABET = string.ascii_uppercase + string.digits


def _id(n: int = 30) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def _epoch(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt else None


def _fee(amount: Decimal, n: int) -> Decimal:
    rate = Decimal("0.40") if n >= 10 else Decimal("0.20")
    return max(Decimal("0.01"), (amount * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


class ApiError(Exception):
    def __init__(self, type_: str, message: str, code: str = "", status: int = 400) -> None:
        super().__init__(message)
        self.type, self.message, self.code, self.status = type_, message, code, status

    def body(self) -> dict:
        if self.type == "ThrottlingException":
            return {"__type": self.type, "message": self.message}
        out = {"__type": self.type, "Message": self.message}
        if self.code:
            out["TurkErrorCode"] = self.code
        return out


def request_error(message: str, code: str) -> ApiError:
    return ApiError("RequestError", message, "AWS.MechanicalTurk." + code)


class Drop(Exception):
    """Close the connection without an answer (after the work was done)."""


@dataclass
class HitType:
    id: str
    title: str
    description: str
    keywords: str
    reward: Decimal
    duration: int
    auto_approval: int
    requirements: list


@dataclass
class Hit:
    id: str
    type: HitType
    question: str
    max_assignments: int
    created: datetime
    expiration: datetime
    annotation: str
    disposed: bool = False


@dataclass
class Asg:
    id: str
    hit_id: str
    worker_id: str
    accepted: datetime
    deadline: datetime
    status: str = "Accepted"  # Accepted (invisible), Submitted, Approved, Rejected, Returned
    answer: str = ""
    submitted: datetime | None = None
    auto_approval: datetime | None = None
    decided: datetime | None = None
    feedback: str = ""


@dataclass
class Injection:
    op: str
    kind: str  # throttle | 5xx | drop
    times: int


@dataclass
class State:
    balance: Decimal = Decimal("10000.00")
    hit_types: dict[str, HitType] = field(default_factory=dict)
    hits: dict[str, Hit] = field(default_factory=dict)
    assignments: dict[str, Asg] = field(default_factory=dict)
    by_hit: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    hit_tokens: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    extend_tokens: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    bonus_tokens: dict[str, datetime] = field(default_factory=dict)
    bonuses: list[dict] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)
    qual_types: dict[str, dict] = field(default_factory=dict)
    quals: dict[tuple[str, str], int] = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    auto_approvals: list[tuple[datetime, str]] = field(default_factory=list)  # heap


class FakeMTurk:
    """The service: state and operations. ``FakeMTurkServer`` puts it on HTTP."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.state = State()
        self.calls: Counter[str] = Counter()
        self.access_keys: Counter[str] = Counter()  # from the SigV4 Authorization header (not verified)
        self.approvals: Counter[str] = Counter()  # assignment id -> effective approvals
        self.rejections: Counter[str] = Counter()
        self.injections: list[Injection] = []
        self.holds: dict[str, tuple[int, threading.Event, threading.Event]] = {}
        self._clock_offset = timedelta(0)

    # --- clock seam ---
    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self._clock_offset

    def advance(self, **kwargs: float) -> None:
        self._clock_offset += timedelta(**kwargs)

    # --- test controls ---
    def inject(self, op: str, kind: str, times: int) -> None:
        """The next ``times`` calls of ``op`` ("*" for any) fail with ``kind``."""
        with self.lock:
            self.injections.append(Injection(op, kind, times))

    def hold(self, op: str, after: int = 0) -> tuple[threading.Event, threading.Event]:
        """Hold the ``after``+1-th call of ``op`` once its work is done; returns (reached, release)."""
        reached, release = threading.Event(), threading.Event()
        self.holds[op] = (after, reached, release)
        return reached, release

    def release_all(self) -> None:
        for _, _, release in self.holds.values():
            release.set()
        self.holds.clear()

    def _take_injection(self, op: str) -> str | None:
        with self.lock:
            for inj in self.injections:
                if inj.times > 0 and inj.op in (op, "*"):
                    inj.times -= 1
                    return inj.kind
        return None

    # --- the worker side (what a worker's browser makes happen at the marketplace) ---
    def accept(self, hit_id: str, worker_id: str) -> str:
        with self.lock:
            self._tick()
            hit = self.state.hits[hit_id]
            if worker_id in self.state.blocks:
                raise ValueError("blocked")
            for req in hit.type.requirements:
                qid = req["QualificationTypeId"]
                if qid in self.state.qual_types and self.state.quals.get((qid, worker_id), 0) < 1:
                    raise ValueError("not qualified")
            if self.now() >= hit.expiration or hit.disposed:
                raise ValueError("expired")
            mine = [self.state.assignments[a] for a in self.state.by_hit[hit_id]]
            if any(a.worker_id == worker_id for a in mine):
                raise ValueError("already accepted")
            live = [a for a in mine if a.status != "Returned" and not self._abandoned(a)]
            if len(live) >= hit.max_assignments:
                raise ValueError("no assignments left")
            asg = Asg(_id(), hit_id, worker_id, self.now(), self.now() + timedelta(seconds=hit.type.duration))
            self.state.assignments[asg.id] = asg
            self.state.by_hit[hit_id].append(asg.id)
            return asg.id

    def submit(self, assignment_id: str, fields: dict[str, str] | None = None, *, xml: str | None = None) -> None:
        with self.lock:
            asg = self.state.assignments[assignment_id]
            if asg.status != "Accepted":
                raise ValueError("already submitted")
            hit = self.state.hits[asg.hit_id]
            asg.answer = xml if xml is not None else answer_xml(fields or {})
            asg.status, asg.submitted = "Submitted", self.now()
            asg.auto_approval = self.now() + timedelta(seconds=hit.type.auto_approval)
            heapq.heappush(self.state.auto_approvals, (asg.auto_approval, asg.id))

    def work(self, hit_id: str, worker_id: str, fields: dict[str, str] | None = None) -> str:
        aid = self.accept(hit_id, worker_id)
        self.submit(aid, fields)
        return aid

    # --- internals ---
    def _abandoned(self, a: Asg) -> bool:
        return a.status == "Accepted" and self.now() > a.deadline

    def _tick(self) -> None:
        """Auto-approve what waited past its AutoApprovalTime (a heap: no scan of every assignment)."""
        now = self.now()
        due = self.state.auto_approvals
        while due and due[0][0] <= now:
            _, aid = heapq.heappop(due)
            a = self.state.assignments[aid]
            if a.status == "Submitted":
                self._pay(a, "")

    def _hit_status(self, hit: Hit) -> str:
        if hit.disposed:
            return "Disposed"
        mine = [self.state.assignments[a] for a in self.state.by_hit[hit.id]]
        working = [a for a in mine if a.status == "Accepted" and not self._abandoned(a)]
        done = [a for a in mine if a.status in ("Submitted", "Approved", "Rejected")]
        if len(done) >= hit.max_assignments or (self.now() >= hit.expiration and not working):
            return "Reviewable"
        if len(done) + len(working) >= hit.max_assignments:
            return "Unassignable"
        return "Assignable" if self.now() < hit.expiration else "Unassignable"

    def _hit_json(self, hit: Hit) -> dict:
        mine = [self.state.assignments[a] for a in self.state.by_hit[hit.id]]
        pending = sum(1 for a in mine if a.status in ("Accepted", "Submitted") and not self._abandoned(a))
        completed = sum(1 for a in mine if a.status in ("Approved", "Rejected"))
        available = max(0, hit.max_assignments - pending - completed)
        t = hit.type
        return {
            "HITId": hit.id, "HITTypeId": t.id, "HITGroupId": t.id, "CreationTime": _epoch(hit.created),
            "Title": t.title, "Description": t.description, "Question": hit.question, "Keywords": t.keywords,
            "HITStatus": self._hit_status(hit), "MaxAssignments": hit.max_assignments, "Reward": f"{t.reward:.2f}",
            "AutoApprovalDelayInSeconds": t.auto_approval, "Expiration": _epoch(hit.expiration),
            "AssignmentDurationInSeconds": t.duration, "RequesterAnnotation": hit.annotation,
            "QualificationRequirements": t.requirements, "HITReviewStatus": "NotReviewed",
            "NumberOfAssignmentsPending": pending, "NumberOfAssignmentsAvailable": available,
            "NumberOfAssignmentsCompleted": completed,
        }

    def _asg_json(self, a: Asg) -> dict:
        out = {"AssignmentId": a.id, "WorkerId": a.worker_id, "HITId": a.hit_id, "AssignmentStatus": a.status,
               "AcceptTime": _epoch(a.accepted), "Deadline": _epoch(a.deadline), "Answer": a.answer,
               "SubmitTime": _epoch(a.submitted), "AutoApprovalTime": _epoch(a.auto_approval)}
        if a.status == "Approved":
            out["ApprovalTime"] = _epoch(a.decided)
        if a.status == "Rejected":
            out["RejectionTime"] = _epoch(a.decided)
        if a.feedback:
            out["RequesterFeedback"] = a.feedback
        return {k: v for k, v in out.items() if v is not None}

    def _visible(self, assignment_id: str) -> Asg:
        a = self.state.assignments.get(assignment_id or "")
        if a is None or a.status not in ("Submitted", "Approved", "Rejected"):
            raise request_error(f"Assignment {assignment_id} does not exist. ({int(self.now().timestamp() * 1000)})",
                                "AssignmentDoesNotExist")
        return a

    def _hit(self, hit_id: str) -> Hit:
        hit = self.state.hits.get(hit_id or "")
        if hit is None:
            raise request_error(f"Hit {hit_id} does not exist.", "HitDoesNotExist")
        return hit

    def _pay(self, a: Asg, feedback: str) -> None:
        hit = self.state.hits[a.hit_id]
        cost = hit.type.reward + _fee(hit.type.reward, hit.max_assignments)
        if self.state.balance < cost:
            raise request_error("You do not have enough funds to approve this assignment.", "InsufficientFunds")
        self.state.balance -= cost
        a.status, a.decided, a.feedback = "Approved", self.now(), feedback
        self.approvals[a.id] += 1

    @staticmethod
    def _page(items: list, params: dict) -> tuple[list, str | None]:
        size = int(params.get("MaxResults") or 10)
        if not 1 <= size <= 100:
            raise request_error("MaxResults must be between 1 and 100.", "ParameterValidationError")
        start = int(base64.b64decode(params["NextToken"]).decode()) if params.get("NextToken") else 0
        chunk = items[start:start + size]
        nxt = base64.b64encode(str(start + size).encode()).decode() if start + size < len(items) else None
        return chunk, nxt

    # --- operations ---
    def op_GetAccountBalance(self, p: dict) -> dict:
        return {"AvailableBalance": f"{self.state.balance:.2f}", "OnHoldBalance": "0.00"}

    def op_CreateHITType(self, p: dict) -> dict:
        reward = Decimal(p["Reward"])
        key = json.dumps([p["Title"], p["Description"], p.get("Keywords", ""), str(reward),
                          p["AssignmentDurationInSeconds"], p.get("AutoApprovalDelayInSeconds", 2592000),
                          p.get("QualificationRequirements", [])], sort_keys=True)
        type_id = "T" + hashlib.sha256(key.encode()).hexdigest().upper()[:29]
        if type_id not in self.state.hit_types:
            self.state.hit_types[type_id] = HitType(
                type_id, p["Title"], p["Description"], p.get("Keywords", ""), reward,
                int(p["AssignmentDurationInSeconds"]), int(p.get("AutoApprovalDelayInSeconds", 2592000)),
                p.get("QualificationRequirements", []))
        return {"HITTypeId": type_id}

    def op_CreateHITWithHITType(self, p: dict) -> dict:
        hit_type = self.state.hit_types.get(p["HITTypeId"])
        if hit_type is None:
            raise request_error(f"HITType {p['HITTypeId']} does not exist.", "HITTypeDoesNotExist")
        token = p.get("UniqueRequestToken")
        if token:
            if len(token) > 64:
                raise request_error("UniqueRequestToken is longer than 64 characters.", "ParameterValidationError")
            earlier = self.state.hit_tokens.get(token)
            if earlier and self.now() - earlier[1] < TOKEN_TTL:
                raise request_error(
                    f"The HIT with ID {earlier[0]} already exists: it was created by an earlier request with "
                    "the same UniqueRequestToken.", "HitAlreadyExists")
        question = p.get("Question", "")
        m = re.search(r"<ExternalURL>(.*?)</ExternalURL>", question, re.S)
        if "ExternalQuestion" in question and (not m or not m.group(1).strip().startswith(("https://", "http://"))):
            raise request_error("The ExternalURL is not a valid URL.", "InvalidURL")
        n = int(p.get("MaxAssignments", 1))
        hit = Hit(_id(), hit_type, question, n, self.now(),
                  self.now() + timedelta(seconds=int(p["LifetimeInSeconds"])), p.get("RequesterAnnotation", ""))
        self.state.hits[hit.id] = hit
        if token:
            self.state.hit_tokens[token] = (hit.id, self.now())
        return {"HIT": self._hit_json(hit)}

    def op_CreateHIT(self, p: dict) -> dict:
        type_id = self.op_CreateHITType(p)["HITTypeId"]
        return self.op_CreateHITWithHITType({**p, "HITTypeId": type_id})

    def op_GetHIT(self, p: dict) -> dict:
        return {"HIT": self._hit_json(self._hit(p["HITId"]))}

    def op_ListHITs(self, p: dict) -> dict:
        chunk, nxt = self._page([h for h in self.state.hits.values() if not h.disposed], p)
        out = {"NumResults": len(chunk), "HITs": [self._hit_json(h) for h in chunk]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def op_ListReviewableHITs(self, p: dict) -> dict:
        want = p.get("Status", "Reviewable")
        hits = [h for h in self.state.hits.values()
                if (not p.get("HITTypeId") or h.type.id == p["HITTypeId"]) and self._hit_status(h) == want]
        chunk, nxt = self._page(hits, p)
        out = {"NumResults": len(chunk), "HITs": [self._hit_json(h) for h in chunk]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def op_ListAssignmentsForHIT(self, p: dict) -> dict:
        self._hit(p["HITId"])
        statuses = set(p.get("AssignmentStatuses") or ["Submitted", "Approved", "Rejected"])
        mine = [self.state.assignments[a] for a in self.state.by_hit[p["HITId"]]]
        listed = [a for a in mine if a.status in statuses]  # never Accepted (still working)
        chunk, nxt = self._page(listed, p)
        out = {"NumResults": len(chunk), "Assignments": [self._asg_json(a) for a in chunk]}
        if nxt:
            out["NextToken"] = nxt
        return out

    def op_GetAssignment(self, p: dict) -> dict:
        a = self._visible(p["AssignmentId"])
        return {"Assignment": self._asg_json(a), "HIT": self._hit_json(self.state.hits[a.hit_id])}

    def op_ApproveAssignment(self, p: dict) -> dict:
        a = self._visible(p["AssignmentId"])
        if a.status != "Submitted" and not (a.status == "Rejected" and p.get("OverrideRejection")):
            raise request_error("This operation can be called with a status of: Submitted", "InvalidAssignmentState")
        self._pay(a, p.get("RequesterFeedback", ""))
        return {}

    def op_RejectAssignment(self, p: dict) -> dict:
        a = self._visible(p["AssignmentId"])
        if not p.get("RequesterFeedback"):
            raise request_error("RequesterFeedback is required.", "ParameterValidationError")
        if a.status != "Submitted":
            raise request_error("This operation can be called with a status of: Submitted", "InvalidAssignmentState")
        a.status, a.decided, a.feedback = "Rejected", self.now(), p["RequesterFeedback"]
        self.rejections[a.id] += 1
        return {}

    def op_SendBonus(self, p: dict) -> dict:
        a = self._visible(p["AssignmentId"])
        if a.worker_id != p["WorkerId"]:
            raise request_error("The assignment was not done by this worker.", "AssignmentDoesNotMatchWorker")
        token = p.get("UniqueRequestToken")
        if token and token in self.state.bonus_tokens and self.now() - self.state.bonus_tokens[token] < TOKEN_TTL:
            raise request_error("A bonus with this UniqueRequestToken already exists; it was paid once.",
                                "BonusAlreadyPaid")
        amount = Decimal(p["BonusAmount"])
        cost = amount + _fee(amount, self.state.hits[a.hit_id].max_assignments)
        if self.state.balance < cost:
            raise request_error("You do not have enough funds to pay this bonus.", "InsufficientFunds")
        self.state.balance -= cost
        if token:
            self.state.bonus_tokens[token] = self.now()
        self.state.bonuses.append({"WorkerId": a.worker_id, "BonusAmount": f"{amount:.2f}", "AssignmentId": a.id,
                                   "Reason": p["Reason"], "GrantTime": _epoch(self.now())})
        return {}

    def op_ListBonusPayments(self, p: dict) -> dict:
        rows = [b for b in self.state.bonuses if b["AssignmentId"] == p.get("AssignmentId")
                or (p.get("HITId") and self.state.assignments[b["AssignmentId"]].hit_id == p["HITId"])]
        chunk, nxt = self._page(rows, p)
        out = {"NumResults": len(chunk), "BonusPayments": chunk}
        if nxt:
            out["NextToken"] = nxt
        return out

    def op_UpdateExpirationForHIT(self, p: dict) -> dict:
        hit = self._hit(p["HITId"])
        at = datetime.fromtimestamp(float(p["ExpireAt"]), tz=timezone.utc)
        hit.expiration = max(at, self.now()) if at > self.now() else self.now()
        return {}

    def op_CreateAdditionalAssignmentsForHIT(self, p: dict) -> dict:
        hit = self._hit(p["HITId"])
        n = int(p["NumberOfAdditionalAssignments"])
        token = p.get("UniqueRequestToken")
        if token:
            earlier = self.state.extend_tokens.get(token)
            if earlier and self.now() - earlier[1] < TOKEN_TTL:
                raise request_error(f"HIT {earlier[0]} was already extended by an earlier request with the same "
                                    "UniqueRequestToken.", "ExtensionAlreadyExists")
        if n < 1:
            raise request_error("NumberOfAdditionalAssignments must be at least 1.", "ParameterValidationError")
        if hit.disposed or self.now() >= hit.expiration:
            raise request_error(f"This HIT is currently in the state '{self._hit_status(hit)}' (expired).",
                                "InvalidHITState")
        if hit.max_assignments < 10 <= hit.max_assignments + n:
            raise request_error("A HIT made with fewer than 10 assignments cannot reach 10.",
                                "InvalidMaximumAssignmentsIncrease")
        hit.max_assignments += n
        if token:
            self.state.extend_tokens[token] = (hit.id, self.now())
        return {}

    def op_DeleteHIT(self, p: dict) -> dict:
        hit = self._hit(p["HITId"])
        if hit.disposed:
            raise request_error(f"Hit {hit.id} does not exist.", "HitDoesNotExist")
        status = self._hit_status(hit)
        mine = [self.state.assignments[a] for a in self.state.by_hit[hit.id]]
        if status not in ("Reviewable", "Assignable") or any(a.status == "Submitted" for a in mine) or (
                status == "Assignable" and mine):
            raise request_error(
                f"This HIT is currently in the state '{status}'. This operation can be called with a status of: "
                "Reviewable (with every assignment approved or rejected)", "InvalidHITState")
        hit.disposed = True
        return {}

    def op_NotifyWorkers(self, p: dict) -> dict:
        if len(p["WorkerIds"]) > 100:
            raise request_error("At most 100 workers per call.", "ParameterValidationError")
        known = {a.worker_id for a in self.state.assignments.values()}
        failures = []
        for w in p["WorkerIds"]:
            if w in known:
                self.state.messages.append({"WorkerId": w, "Subject": p["Subject"], "Text": p["MessageText"]})
            else:
                failures.append({"NotifyWorkersFailureCode": "HardFailure",
                                 "NotifyWorkersFailureMessage": "The worker has not worked for you.", "WorkerId": w})
        return {"NotifyWorkersFailureStatuses": failures}

    def op_CreateWorkerBlock(self, p: dict) -> dict:
        self.state.blocks[p["WorkerId"]] = p["Reason"]
        return {}

    def op_CreateQualificationType(self, p: dict) -> dict:
        if any(q["Name"] == p["Name"] for q in self.state.qual_types.values()):
            raise request_error("You have already created a QualificationType with this name.",
                                "QualificationTypeAlreadyExists")
        q = {"QualificationTypeId": _id(), "Name": p["Name"], "Description": p["Description"],
             "QualificationTypeStatus": p["QualificationTypeStatus"], "AutoGranted": p.get("AutoGranted", False),
             "CreationTime": _epoch(self.now()), "IsRequestable": False}
        self.state.qual_types[q["QualificationTypeId"]] = q
        return {"QualificationType": q}

    def op_ListQualificationTypes(self, p: dict) -> dict:
        rows = [q for q in self.state.qual_types.values() if (p.get("Query") or "").lower() in q["Name"].lower()]
        chunk, nxt = self._page(rows, p)
        out = {"NumResults": len(chunk), "QualificationTypes": chunk}
        if nxt:
            out["NextToken"] = nxt
        return out

    def op_AssociateQualificationWithWorker(self, p: dict) -> dict:
        if p["QualificationTypeId"] not in self.state.qual_types:
            raise request_error("QualificationType does not exist.", "QualificationTypeDoesNotExist")
        self.state.quals[(p["QualificationTypeId"], p["WorkerId"])] = int(p.get("IntegerValue", 1))
        return {}

    # --- dispatch ---
    def handle(self, op: str, params: dict) -> dict:
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            raise ApiError("UnknownOperationException", f"Unknown operation {op}")
        with self.lock:
            self._tick()
            return fn(params)


def answer_xml(fields: dict[str, str]) -> str:
    body = "".join(f"<Answer><QuestionIdentifier>{escape(k)}</QuestionIdentifier><FreeText>{escape(str(v))}"
                   "</FreeText></Answer>" for k, v in fields.items())
    return ('<?xml version="1.0" encoding="UTF-8"?><QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.com/'
            f'AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd">{body}</QuestionFormAnswers>')


class _Handler(BaseHTTPRequestHandler):
    server: "FakeMTurkServer"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Answer in one segment, not headers then body held back by Nagle and delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", _id(20))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        service: FakeMTurk = self.server.service
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        target = self.headers.get("X-Amz-Target", "")
        if not target.startswith(TARGET_PREFIX):
            self._send(400, {"__type": "UnknownOperationException", "message": "No X-Amz-Target"})
            return
        op = target[len(TARGET_PREFIX):]
        key = re.search(r"Credential=([^/]+)/", self.headers.get("Authorization", ""))
        with service.lock:
            service.calls[op] += 1
            service.access_keys[key.group(1) if key else ""] += 1
            nth = service.calls[op]
        injected = service._take_injection(op)
        if injected == "throttle":
            self._send(400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
            return
        if injected == "5xx":
            self._send(500, {"__type": "ServiceFault", "Message": "Amazon Mechanical Turk is temporarily unable "
                             "to process your request. Try your call again.", "TurkErrorCode": "ServiceFault"})
            return
        try:
            status, body = 200, service.handle(op, json.loads(raw or b"{}"))
        except ApiError as exc:
            status, body = exc.status, exc.body()
        except KeyError as exc:
            status, body = 400, {"__type": "ValidationException", "message": f"missing parameter {exc}"}
        hold = service.holds.get(op)
        if hold and nth > hold[0]:
            service.holds.pop(op, None)
            hold[1].set()
            hold[2].wait(timeout=120)
        if injected == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        try:
            self._send(status, body)
        except OSError:
            pass  # the client is gone (killed mid-call): the work is done all the same


class FakeMTurkServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, service: FakeMTurk | None = None, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.service = service or FakeMTurk()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def start(self) -> "FakeMTurkServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.service.release_all()
        self.shutdown()
        self.server_close()
