"""One error format for the whole API:

``{"error": {"status": 404, "code": "not_found", "message": "...", "details": {...}}}``
"""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def _message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            text = _message(value)
            return text if key in ("non_field_errors", "detail") else f"{key}: {text}"
        return "Invalid input."
    if isinstance(detail, (list, tuple)):
        return _message(detail[0]) if detail else "Invalid input."
    return str(detail)


def error_body(*, status_code: int, code: str, message: str, details=None) -> dict:
    return {"error": {"status": status_code, "code": code, "message": message, "details": details or {}}}


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        code = "invalid"
        details = detail if isinstance(detail, dict) else {"non_field_errors": detail}
    else:
        code = getattr(exc, "default_code", None) or "error"
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
        if isinstance(codes, str):
            code = codes
        details = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            details = {"retry_after_seconds": int(exc.wait)}
    response.data = error_body(status_code=response.status_code, code=code, message=_message(detail), details=details)
    return response


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the object's state."
    default_code = "conflict"


def error_response(status_code: int, code: str, message: str, headers=None) -> Response:
    return Response(error_body(status_code=status_code, code=code, message=message), status=status_code, headers=headers)
