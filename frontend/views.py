"""The task pages and the answer endpoint. Thin: resolve the task, call one service, reply.

A page runs in two hosts with the same code: framed as an MTurk ExternalQuestion (MTurk or our
marketplace add assignmentId, hitId, workerId and turkSubmitTo to the query string), or opened
directly by a signed-in user. Task pages may be framed by the origins in TOOLS_FRAME_ANCESTORS
(CSP frame-ancestors); every other page keeps X-Frame-Options: DENY.
"""
from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.core.exceptions import RequestDataTooBig
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from annotator import ratelimit
from frontend import selectors, services
from frontend.answers import AnswerError
from frontend.models import Kind

TOOL_TITLES = dict(Kind.choices)


def _frame_ancestors() -> str:
    seen: list[str] = []
    for origin in settings.TOOLS_FRAME_ANCESTORS:
        origin = origin.strip().rstrip("/")
        if origin and origin not in seen and not any(c in origin for c in ";,\r\n"):
            seen.append(origin)
    return " ".join(seen)


def _task_or_404(kind: str, token: str):
    if kind not in Kind.values:
        raise Http404("No such tool.")
    task = services.task_from_token(kind=kind, token=token)
    if task is None:
        raise Http404("No such task.")
    return task


def _direct_identity(request: HttpRequest) -> tuple[str, str]:
    user = request.user
    return user.get_username(), f"direct-{user.pk}"


@require_GET
@never_cache
@xframe_options_exempt
@ensure_csrf_cookie
def task_page(request: HttpRequest, kind: str, token: str) -> HttpResponse:
    task = _task_or_404(kind, token)
    framed = "assignmentId" in request.GET
    if framed:
        worker_id = request.GET.get("workerId", "")
        assignment_id = request.GET.get("assignmentId", "")
    elif request.user.is_authenticated:
        worker_id, assignment_id = _direct_identity(request)
    else:
        return redirect_to_login(request.get_full_path())
    context = selectors.task_context(task=task, worker_id=worker_id)
    context["answer_url"] = request.path + "answer"
    context["direct_user"] = "" if framed else worker_id
    stored = selectors.stored_answer(task=task, assignment_id=assignment_id)
    context["stored"] = selectors.answer_response(answer=stored, created=False) if stored else None
    response = render(
        request,
        "frontend/task.html",
        {"data": context, "title": TOOL_TITLES[kind], "kind": kind, "module": f"frontend/{kind}.js"},
    )
    # Who may frame the page; and, as a second line against injected markup, scripts only from
    # our own origin (the page data is a non-executed JSON block).
    response["Content-Security-Policy"] = (
        f"frame-ancestors {_frame_ancestors()}; script-src 'self'; object-src 'none'; base-uri 'none'"
    )
    return response


# No id or pixel coordinate comes near this; larger integers cannot even become a float.
_MAX_INT = 2**53


class _NumberTooLarge(ValueError):
    pass


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > _MAX_INT:
        raise _NumberTooLarge(f"The number {text[:20]}{'...' if len(text) > 20 else ''} is too large.")
    return value


MAX_ERROR_CHARS = 500  # refusals may quote what was sent; a huge value is not sent back whole


def _error(message: str, status: int = 400) -> JsonResponse:
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return JsonResponse({"ok": False, "error": message}, status=status)


def _answer_body(request: HttpRequest) -> tuple[dict | None, JsonResponse | None]:
    """The posted ``{"host": {...}, "answer": ...}``, or the error to answer with."""
    try:
        body = json.loads(request.body or b"null", parse_int=_bounded_int)
    except RequestDataTooBig:
        return None, _error("The answer is too large.", 413)
    except _NumberTooLarge as exc:
        return None, _error(str(exc))
    except RecursionError:
        return None, _error("The answer is nested too deeply to be an answer.")
    except (ValueError, UnicodeDecodeError):
        return None, _error("The answer is not valid JSON.")
    if not isinstance(body, dict) or not isinstance(body.get("host"), dict):
        return None, _error("Expected {\"host\": {...}, \"answer\": {...}}.")
    return body, None


@csrf_exempt  # framed pages have no cookies; direct submissions are CSRF-checked below
@require_POST
def task_answer(request: HttpRequest, kind: str, token: str) -> JsonResponse:
    body, error = _answer_body(request)
    host = body["host"] if error is None else {}
    worker_id = assignment_id = hit_id = None
    if host.get("assignmentId"):
        worker_id, assignment_id, hit_id = host.get("workerId"), host.get("assignmentId"), host.get("hitId", "")
        if not all(isinstance(v, str) for v in (worker_id, assignment_id, hit_id)):
            error, worker_id = _error("assignmentId, workerId and hitId must be text."), None
    # Counted before the database is read, even for a body that is refused: the client address
    # and the worker the host names (one Redis round trip).
    refusal = ratelimit.submission_refusal(request, group="tools-answer",
                                           worker_id=worker_id.strip() if worker_id else "")
    if refusal is not None:
        return ratelimit.json_response(refusal)
    task = _task_or_404(kind, token)
    if error is not None:
        return error
    if worker_id is None:
        if not request.user.is_authenticated:
            return _error("Sign in to submit, or open the task from a HIT.", 403)
        if CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {}) is not None:
            return _error("The page is out of date (CSRF check failed); reload it.", 403)
        (worker_id, assignment_id), hit_id = _direct_identity(request), ""
        refusal = ratelimit.submission_worker_refusal(request, group="tools-answer", worker_id=worker_id.strip())
        if refusal is not None:
            return ratelimit.json_response(refusal)
    try:
        answer, created = services.answer_submit(
            task=task, worker_id=worker_id, assignment_id=assignment_id, hit_id=hit_id, answer=body.get("answer")
        )
    except AnswerError as exc:
        return _error(str(exc))
    return JsonResponse(selectors.answer_response(answer=answer, created=created), status=201 if created else 200)
