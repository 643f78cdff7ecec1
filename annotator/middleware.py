"""A clear, retryable answer while a shared service is down, instead of a 500 page.

When PostgreSQL restarts, Redis restarts, or either is briefly out of reach, a request fails
with a connection error somewhere below the view: the database driver, Django's Redis cache
(rate limits), or kombu publishing a Celery task. Nothing about the request was wrong, and
sending it again in a few seconds works, so the client is told exactly that:
``503 Service Unavailable`` with ``Retry-After`` and a short message (JSON for API and tool
calls, the MTurk error shape on ``/mturk-api/``, a small HTML page otherwise). The error is still
logged with its traceback.

Errors raised by a view come through ``process_exception``. Errors raised later, in another
middleware's response phase (the session save is a database write), have already been turned
into a 500 response by Django when they reach us; the ``got_request_exception`` signal, sent
while that exception is being handled, marks the request so the 500 is replaced here too.

Django reconnects by itself: with ``CONN_HEALTH_CHECKS`` a persistent connection that died with
the server is tested before its first use in a request and replaced, and a connection that
failed during a request is closed at its end (``close_if_unusable_or_obsolete``).
"""
from __future__ import annotations

import html
import logging
import sys

from django.conf import settings
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

logger = logging.getLogger("annotator.unavailable")

_MARK = "_annotator_unavailable"


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OperationalError, InterfaceError]
    try:
        import redis.exceptions as r

        types += [r.ConnectionError, r.TimeoutError, r.BusyLoadingError]
    except ImportError:  # pragma: no cover - redis is in requirements.txt
        pass
    try:
        import kombu.exceptions as k

        types.append(k.OperationalError)  # publishing a task with the broker down
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


TRANSIENT = _transient_types()


def _service_of(exc: BaseException) -> str:
    if isinstance(exc, (OperationalError, InterfaceError)):
        return "database"
    module = type(exc).__module__
    if module.startswith("kombu") or module.startswith("amqp"):
        return "task queue"
    return "cache"


def is_transient(exc: BaseException | None) -> bool:
    """A connection-level failure of a shared service, worth retrying as is."""
    seen = 0
    while exc is not None and seen < 5:  # kombu and Django wrap the driver's error
        if isinstance(exc, TRANSIENT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def unavailable_response(request, exc: BaseException) -> HttpResponse:
    retry_after = int(getattr(settings, "SERVICE_UNAVAILABLE_RETRY_AFTER", 5))
    service = _service_of(exc)
    message = (f"The server could not reach its {service} just now. Nothing was wrong with your request: "
               f"send it again in {retry_after} seconds.")
    path = request.path
    accept = request.headers.get("Accept", "")
    if path.startswith("/mturk-api/"):
        # The MTurk error shape; botocore retries a 503 by itself.
        response = JsonResponse({"__type": "ServiceUnavailable", "Message": message}, status=503,
                                content_type="application/x-amz-json-1.1")
    elif (path.startswith("/api/") or path.endswith("/answer") or "json" in accept
          or "json" in request.headers.get("Content-Type", "")):
        response = JsonResponse({"ok": False, "error": message, "retryable": True,
                                 "retry_after": retry_after}, status=503)
    else:
        response = HttpResponse(
            "<!doctype html><meta charset=utf-8><title>Briefly unavailable</title>"
            f"<h1>Briefly unavailable</h1><p>{html.escape(message)}</p>"
            "<p>If you were submitting work, submit it again: it is recorded once.</p>",
            status=503, content_type="text/html; charset=utf-8",
        )
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


def _mark_request(sender, request=None, **kwargs) -> None:
    exc = sys.exception()
    if request is not None and is_transient(exc):
        setattr(request, _MARK, exc)


got_request_exception.connect(_mark_request, dispatch_uid="annotator.middleware.mark_unavailable")


class ServiceUnavailableMiddleware:
    """Turn connection errors of PostgreSQL, Redis and the broker into 503 + Retry-After."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        exc = getattr(request, _MARK, None)
        if exc is not None and response.status_code == 500:
            return unavailable_response(request, exc)
        return response

    def process_exception(self, request, exception):
        if not is_transient(exception):
            return None
        logger.error("%s %s: a shared service is unavailable (%s: %s); answered 503", request.method,
                     request.path, type(exception).__name__, exception, exc_info=exception)
        return unavailable_response(request, exception)
