"""HTTP entry points: the MTurk-compatible Requester API (``/mturk-api/``), the worker site
(``/market/...``) and the form target of task iframes (``/mturk/externalSubmit``).

Views are thin: authenticate, validate, call one service or selector, render or serialize.
"""
from __future__ import annotations

import json
import logging
import uuid
from functools import wraps
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from annotator import ratelimit
from crowd.marketplace import api, auth, clock, errors, forms, qualtests, selectors, services, shapes
from crowd.marketplace.models import QualificationType, WorkerProfile

log = logging.getLogger(__name__)
TARGET_PREFIX = "MTurkRequesterServiceV20170117."
CONTENT_TYPE = "application/x-amz-json-1.1"
# Operations whose answer depends on what time has made due (abandoned work, auto-approval,
# expired HITs); the rest (creating things, qualifications, blocks) skip the catch-up queries.
TIME_DEPENDENT = frozenset({
    "GetHIT", "ListHITs", "ListReviewableHITs", "UpdateHITReviewStatus", "UpdateExpirationForHIT", "DeleteHIT",
    "ListAssignmentsForHIT", "GetAssignment", "ApproveAssignment", "RejectAssignment", "SendBonus",
    "GetAccountBalance",
})


# --- Requester API -----------------------------------------------------------------------------

def _api_response(body: dict, status: int, request_id: str) -> JsonResponse:
    response = JsonResponse(body, status=status, content_type=CONTENT_TYPE)
    response["x-amzn-RequestId"] = request_id
    return response


@csrf_exempt
def mturk_api(request):
    """One endpoint for every operation, named by the X-Amz-Target header, as MTurk's."""
    request_id = str(uuid.uuid4())
    try:
        body = _dispatch(request, request_id)
        return _api_response(body, 200, request_id)
    except errors.MarketplaceError as exc:
        return _api_response(exc.body(), exc.status, request_id)
    except Exception:
        log.exception("marketplace API request %s failed", request_id)
        fault = errors.ServiceFault("We encountered an internal error. Please try the request again.",
                                    "AWS.MechanicalTurk.InternalError")
        return _api_response(fault.body(), fault.status, request_id)


def _dispatch(request, request_id: str) -> dict:
    if request.method != "POST":
        raise errors.RequestError("The Requester API takes POST requests only.", "AWS.BadRequest")
    target = request.headers.get("X-Amz-Target", "")
    name = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
    key = auth.authenticate(auth.IncomingRequest(
        method=request.method, url=request.build_absolute_uri(),
        headers={k.lower(): v for k, v in request.headers.items()}, body=request.body))
    auth.throttle(key.access_key_id)
    auth.note_use(key)
    operation = shapes.operation(name) if name in shapes.OPERATIONS else None
    if operation is None:
        raise errors.AuthError("UnknownOperationException",
                               f"Operation {target or '(none)'} is not supported by this marketplace.", status=400)
    try:
        params = json.loads(request.body or b"{}")
    except ValueError:
        raise errors.RequestError("The request body is not valid JSON.", "AWS.BadRequest") from None
    problems = shapes.validate(operation.input_shape, params)
    if problems:
        raise errors.ValidationError(shapes.summarize(problems))
    api.check_lengths(params)
    account = key.account
    if name in TIME_DEPENDENT:
        services.catch_up(account_id=account.pk)
    result = api.HANDLERS[name](account, params, {"request_id": request_id})
    wire = shapes.to_wire(operation.output_shape, result) if operation.output_shape else {}
    if getattr(settings, "MARKETPLACE_VALIDATE_RESPONSES", True):
        broken = shapes.validate(operation.output_shape, wire)
        if broken:
            log.error("response of %s breaks the MTurk model: %s", name, broken)
            raise errors.ServiceFault("The marketplace produced a response outside the MTurk model.",
                                      "AWS.MechanicalTurk.InternalError")
    return wire


# --- Worker site helpers -----------------------------------------------------------------------

LOGIN_URL = "/market/login/"


def _worker_of(user) -> WorkerProfile | None:
    """The user's WorkerProfile, read once per request: it stays on ``user.worker_profile``,
    where the templates look for it."""
    try:
        return user.worker_profile
    except WorkerProfile.DoesNotExist:
        return None


def worker_required(view):
    """The signed-in user's WorkerProfile as ``request.worker``, or a way to get one."""

    @login_required(login_url=LOGIN_URL)
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        worker = _worker_of(request.user)
        if worker is None:
            return render(request, "marketplace/not_a_worker.html", status=403)
        request.worker = worker
        return view(request, *args, **kwargs)

    return wrapped


def _with_query(url: str, params: dict) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _submit_base(request) -> str:
    configured = getattr(settings, "MARKETPLACE_SUBMIT_BASE_URL", "")
    return configured.rstrip("/") if configured else request.build_absolute_uri("/").rstrip("/")


def _frame_src(request, hit, params: dict) -> str:
    if hit.question_kind == "ExternalQuestion":
        return _with_query(hit.external_url, params)
    return _with_query(reverse("marketplace:hit-question", args=[hit.hit_id]), params)


def _message(request, title: str, text: str, status: int = 400):
    return render(request, "marketplace/message.html", {"title": title, "text": text}, status=status)


# --- Accounts ----------------------------------------------------------------------------------

class LoginView(auth_views.LoginView):
    template_name = "marketplace/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        limited = ratelimit.login_limited(lambda r: None)(request)
        return limited if limited is not None else super().post(request, *args, **kwargs)

    def get_default_redirect_url(self):
        return reverse("marketplace:home")

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs),
                "open_signup": getattr(settings, "MARKETPLACE_OPEN_SIGNUP", False)}


@ratelimit.login_limited  # creating accounts is counted with signing in, per address
def signup(request):
    code = request.GET.get("code", "") or request.POST.get("invite_code", "")
    open_signup = getattr(settings, "MARKETPLACE_OPEN_SIGNUP", False)
    if not open_signup and not code:
        return _message(request, "Invitation needed",
                        "Joining this marketplace takes an invitation link from a requester.", status=403)
    form = forms.SignupForm(request.POST or None, initial={"invite_code": code}, require_code=not open_signup)
    if request.method == "POST" and form.is_valid():
        try:
            worker = services.worker_sign_up(
                username=form.cleaned_data["username"], password=form.cleaned_data["password1"],
                email=form.cleaned_data.get("email", ""), country=form.cleaned_data["country"],
                invite_code=form.cleaned_data.get("invite_code", ""))
        except services.WorkerError as exc:
            form.add_error("invite_code", str(exc))
        else:
            auth_login(request, worker.user, backend="crowd.marketplace.auth.WorkerModelBackend")
            messages.success(request, f"Welcome! Your worker ID is {worker.worker_id}.")
            return redirect("marketplace:home")
    return render(request, "marketplace/signup.html", {"form": form, "open_signup": open_signup})


def join(request, code: str):
    """An invitation link: sign up with it, or add the requester's crowd to an existing worker."""
    if not request.user.is_authenticated:
        return redirect(f"{reverse('marketplace:signup')}?{urlencode({'code': code})}")
    worker = WorkerProfile.objects.filter(user=request.user).first()
    if worker is None:
        return render(request, "marketplace/not_a_worker.html", status=403)
    if request.method == "POST":
        try:
            account = services.worker_invite_redeem(worker=worker, code=code)
        except services.WorkerError as exc:
            return _message(request, "Invitation not valid", str(exc))
        messages.success(request, f"You joined the crowd of {account.user.get_username()}.")
        return redirect("marketplace:home")
    return render(request, "marketplace/join.html", {"code": code})


@login_required(login_url=LOGIN_URL)
@require_POST
def become_worker(request):
    worker, _ = WorkerProfile.objects.get_or_create(user=request.user)
    messages.success(request, f"You can now work in the marketplace as {worker.worker_id}.")
    return redirect("marketplace:home")


# --- Finding and doing work --------------------------------------------------------------------

@worker_required
def home(request):
    services.catch_up()  # overdue accepted work comes back before counting what is left
    groups = selectors.hit_groups_for_worker(worker=request.worker)
    return render(request, "marketplace/home.html", {
        "groups": groups, "worker": request.worker,
        "unread": selectors.worker_unread_count(worker=request.worker)})


@worker_required
def group_preview(request, hit_type_id: str):
    ids = selectors.group_candidate_hit_ids(worker=request.worker, hit_type_id=hit_type_id, limit=1)
    if not ids:
        return _message(request, "No HITs left", "There are no more HITs in this group for you.", status=404)
    return redirect("marketplace:hit-preview", hit_id=ids[0])


@worker_required
def hit_preview(request, hit_id: str):
    hit = selectors.hit_for_worker(worker=request.worker, hit_id=hit_id)
    if hit is None:
        raise Http404("No such HIT")
    actions = selectors.worker_actions(worker=request.worker, hit_type=hit.hit_type)
    if "Preview" not in actions:
        return _message(request, "Qualification required",
                        "You do not meet the qualification requirements to preview this HIT.", status=403)
    src = _frame_src(request, hit, {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": hit.hit_id})
    return render(request, "marketplace/preview.html", {
        "hit": hit, "frame_src": src, "can_accept": "Accept" in actions,
        "frame_height": hit.frame_height or 600})


@worker_required
@require_POST
def hit_accept(request, hit_id: str):
    try:
        assignment = services.assignment_accept(worker=request.worker, hit_id=hit_id)
    except services.WorkerError as exc:
        return _message(request, "Could not accept this HIT", str(exc), status=409)
    return redirect("marketplace:work", assignment_id=assignment.assignment_id)


@worker_required
@require_POST
def group_accept(request, hit_type_id: str):
    try:
        assignment = services.assignment_accept_next(worker=request.worker, hit_type_id=hit_type_id)
    except services.WorkerError as exc:
        return _message(request, "Could not accept a HIT", str(exc), status=409)
    return redirect("marketplace:work", assignment_id=assignment.assignment_id)


@worker_required
def work(request, assignment_id: str):
    assignment = selectors.assignment_for_worker(worker=request.worker, assignment_id=assignment_id)
    if assignment is None:
        raise Http404("No such assignment")
    if assignment.status != assignment.Status.ACCEPTED or assignment.deadline <= clock.now():
        return _message(request, "Not in progress",
                        f"This assignment is {assignment.status.lower()}; there is nothing more to do here.",
                        status=410)
    hit = assignment.hit
    src = _frame_src(request, hit, {"assignmentId": assignment.assignment_id, "hitId": hit.hit_id,
                                    "workerId": request.worker.worker_id, "turkSubmitTo": _submit_base(request)})
    return render(request, "marketplace/work.html", {
        "assignment": assignment, "hit": hit, "frame_src": src, "frame_height": hit.frame_height or 600})


@worker_required
@require_POST
def work_return(request, assignment_id: str):
    try:
        services.assignment_return(worker=request.worker, assignment_id=assignment_id)
    except services.WorkerError as exc:
        return _message(request, "Could not return this HIT", str(exc), status=409)
    messages.info(request, "You returned the HIT; it is available to other workers again.")
    return redirect("marketplace:home")


@worker_required
@xframe_options_sameorigin
def hit_question(request, hit_id: str):
    """An HTMLQuestion's content, sandboxed: it runs as an opaque origin, never as this site."""
    hit = selectors.hit_for_worker(worker=request.worker, hit_id=hit_id)
    if hit is None or hit.question_kind != "HTMLQuestion":
        raise Http404("No such question")
    if "Preview" not in selectors.worker_actions(worker=request.worker, hit_type=hit.hit_type):
        raise Http404("No such question")
    response = HttpResponse(hit.html_content, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = "sandbox allow-scripts allow-forms allow-popups allow-modals"
    return response


@csrf_exempt
@xframe_options_sameorigin
def external_submit(request):
    """The form target of task iframes. It counts only for an assignment the signed-in worker
    holds, and only once. A post without the session cookie (a third-party or sandboxed frame)
    gets a same-site confirmation page that posts again with it."""
    if request.method != "POST":
        return _message(request, "Nothing to see here", "Work is submitted from the task's own form.", status=405)
    worker = _worker_of(request.user) if request.user.is_authenticated else None
    # The client address and the signed-in worker, counted together (one Redis round trip).
    refusal = ratelimit.submission_refusal(request, group="external-submit",
                                           worker_id=worker.worker_id if worker else "")
    fields = [(k, v) for k, values in request.POST.lists() for v in values if k != "_confirm"]
    assignment_id = request.POST.get("assignmentId", "")
    if refusal:
        response = _message(request, "Too many submissions", refusal.message, status=429)
        response["Retry-After"] = str(refusal.retry_after)
        return response
    if worker is None:
        if request.POST.get("_confirm"):
            return _message(request, "Sign in to submit",
                            "Sign in to the marketplace as the worker who accepted this HIT, then submit again.",
                            status=403)
        return render(request, "marketplace/submit_confirm.html", {"fields": fields}, status=200)
    if not assignment_id:
        return _message(request, "No assignment", "The form did not name an assignmentId.", status=400)
    try:
        services.assignment_submit(worker=worker, assignment_id=assignment_id, fields=fields)
    except services.WorkerError as exc:
        return _message(request, "Not submitted", str(exc), status=409)
    return render(request, "marketplace/submitted.html", {"home": reverse("marketplace:home")})


# --- The worker's own pages --------------------------------------------------------------------

@worker_required
def dashboard(request):
    services.catch_up()
    return render(request, "marketplace/dashboard.html", {
        "worker": request.worker, "board": selectors.worker_dashboard(worker=request.worker)})


@worker_required
def qualifications_page(request):
    if request.method == "POST":
        qtype = QualificationType.objects.filter(
            qualification_type_id=request.POST.get("qualification_type_id", "")).first()
        if qtype is None or not selectors.worker_can_see_account(worker=request.worker, account_id=qtype.account_id):
            raise Http404("No such qualification type")
        try:
            services.qualification_request_auto(worker=request.worker, qualification_type=qtype)
        except services.WorkerError as exc:
            return _message(request, "Not granted", str(exc), status=409)
        messages.success(request, f"You now hold the qualification {qtype.name}.")
        return redirect("marketplace:qualifications")
    held, offered = selectors.worker_qualifications(worker=request.worker)
    return render(request, "marketplace/qualifications.html", {"held": held, "offered": offered,
                                                               "worker": request.worker})


@worker_required
def qualification_test(request, qualification_type_id: str):
    qtype = QualificationType.objects.filter(qualification_type_id=qualification_type_id).exclude(test="").first()
    if qtype is None or not selectors.worker_can_see_account(worker=request.worker, account_id=qtype.account_id):
        raise Http404("No such qualification test")
    test = qualtests.parse_test(qtype.test)
    if request.method == "POST":
        answers = {q.identifier: request.POST.get(q.identifier, "") for q in test}
        try:
            qual = services.qualification_take_test(worker=request.worker, qualification_type=qtype, answers=answers)
        except services.WorkerError as exc:
            return _message(request, "Test not taken", str(exc), status=409)
        messages.success(request, f"You scored {qual.integer_value} on {qtype.name}.")
        return redirect("marketplace:qualifications")
    return render(request, "marketplace/qualification_test.html", {"qtype": qtype, "test": test})


@worker_required
def notifications(request):
    notes = selectors.worker_notifications(worker=request.worker)
    services.notification_mark_read(worker=request.worker)
    return render(request, "marketplace/notifications.html", {"notes": notes})
