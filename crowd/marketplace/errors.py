"""Errors as MTurk returns them: a JSON body with ``__type``, ``Message`` and ``TurkErrorCode``.

boto3 maps ``__type`` to ``client.exceptions.RequestError`` / ``ServiceFault`` and exposes
``TurkErrorCode`` in ``err.response``. Authentication and throttling errors use the generic AWS
JSON-protocol types (``UnrecognizedClientException``, ``InvalidSignatureException``,
``ThrottlingException``) exactly as AWS front doors send them.
"""
from __future__ import annotations

import time


class MarketplaceError(Exception):
    type_name = "RequestError"
    status = 400

    def __init__(self, message: str, turk_error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.turk_error_code = turk_error_code

    def body(self) -> dict:
        out = {"__type": self.type_name, "Message": self.message}
        if self.turk_error_code:
            out["TurkErrorCode"] = self.turk_error_code
        return out


class RequestError(MarketplaceError):
    """The request was wrong (unknown entity, wrong state, bad value): HTTP 400."""


class ServiceFault(MarketplaceError):
    type_name = "ServiceFault"
    status = 500


class AuthError(MarketplaceError):
    """A generic AWS JSON-protocol error (authentication, unknown operation): lower-case ``message``."""

    status = 403

    def __init__(self, type_name: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.status = status

    def body(self) -> dict:
        return {"__type": self.type_name, "message": self.message}


class Throttled(MarketplaceError):
    type_name = "ThrottlingException"

    def __init__(self) -> None:
        super().__init__("Rate exceeded")

    def body(self) -> dict:
        return {"__type": self.type_name, "message": self.message}


class ValidationError(MarketplaceError):
    """The request does not match botocore's shape for the operation."""

    type_name = "ValidationException"

    def body(self) -> dict:
        return {"__type": self.type_name, "message": self.message}


def _stamp() -> str:
    # MTurk ends its messages with the server time in milliseconds, e.g. "(1588180293498)".
    return f"({int(time.time() * 1000)})"


def hit_not_found(hit_id: str) -> RequestError:
    return RequestError(f"Hit {hit_id} does not exist. {_stamp()}", "AWS.MechanicalTurk.HitDoesNotExist")


def assignment_not_found(assignment_id: str) -> RequestError:
    return RequestError(f"Assignment {assignment_id} does not exist. {_stamp()}",
                        "AWS.MechanicalTurk.AssignmentDoesNotExist")


def hit_type_not_found(hit_type_id: str) -> RequestError:
    return RequestError(f"HITType {hit_type_id} does not exist. {_stamp()}", "AWS.MechanicalTurk.HITTypeDoesNotExist")


def qualification_type_not_found(qtid: str) -> RequestError:
    return RequestError(f"QualificationType {qtid} does not exist. {_stamp()}",
                        "AWS.MechanicalTurk.QualificationTypeDoesNotExist")


def worker_not_found(worker_id: str) -> RequestError:
    return RequestError(f"Worker {worker_id} does not exist. {_stamp()}", "AWS.MechanicalTurk.WorkerDoesNotExist")


def invalid_state(message: str) -> RequestError:
    return RequestError(f"{message} {_stamp()}", "AWS.MechanicalTurk.InvalidAssignmentState")


def parameter(message: str) -> RequestError:
    return RequestError(f"{message} {_stamp()}", "AWS.ParameterOutOfRange")


def insufficient_funds() -> RequestError:
    return RequestError(
        "This Requester has insufficient funds in their account to complete this transaction. "
        f"Ask the marketplace operator to top up the balance. {_stamp()}",
        "AWS.MechanicalTurk.InsufficientFunds",
    )
