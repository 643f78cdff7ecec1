"""Rate limits on sign-in and on answer submissions, counted by django-ratelimit in Django's cache.

Each limit is a rate such as ``"20/m"`` read from settings at request time (``RATELIMIT_*`` in
``annotator/settings.py``), counted per key in a fixed window: per client IP, per user name tried
at a sign-in form, per worker id submitting answers. Over the limit, the request is answered
``429 Too Many Requests`` with ``Retry-After`` (the seconds until the window ends) and a message
in plain words; nothing behind the limit runs.

The requester API (``/mturk-api/``) has its own token bucket per access key in
``crowd.marketplace.auth.throttle``, answered with MTurk's ``ThrottlingException`` so that
botocore's retry handler backs off; the REST API uses DRF's throttles.

The counters live in Django's cache: per process with the default local-memory cache, shared by
every process and machine once ``CACHE_URL`` points at Redis. When the cache cannot be reached
the limits let requests through (logged): an answer is never lost because Redis restarted.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from functools import wraps
from typing import Callable

from django.conf import settings
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape
from django_ratelimit import core as ratelimit_core
from django_ratelimit.core import get_usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """A limit that was passed: what to tell the client, and when to come back."""

    message: str
    retry_after: int


def client_ip(request: HttpRequest) -> str:
    """The address limits are counted by (``RATELIMIT_IP_META_KEY`` points here).

    With ``RATELIMIT_PROXY_COUNT`` = N proxies in front, each appending the address it saw to
    X-Forwarded-For, the N-th entry from the right is the client as our outermost proxy saw it;
    entries further left are whatever the client wrote and are never trusted.
    """
    proxies = int(getattr(settings, "RATELIMIT_PROXY_COUNT", 0) or 0)
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= proxies:
            candidate = hops[-proxies]
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                pass
    return request.META.get("REMOTE_ADDR") or "0.0.0.0"


def _rate(setting: str) -> str | None:
    rate = getattr(settings, setting, "") or None
    return rate


def check(request: HttpRequest, *, group: str, key: str, setting: str, what: str) -> Refusal | None:
    """Count one request against the limit named by ``setting`` for ``key`` in ``group``.

    ``key`` is ``"ip"`` (the client address) or any text (a worker id, a user name). Returns a
    Refusal when the count is over the rate, None otherwise (or when the limit is switched off by
    an empty setting, or the cache is unreachable).
    """
    rate = _rate(setting)
    if rate is None:
        return None
    value_key = key if key == "ip" else (lambda _group, _request: key)
    try:
        usage = _redis_usage(request, group=group, key=key, rate=rate)
        if usage is _NOT_REDIS:
            usage = get_usage(request, group=group, key=value_key, rate=rate, increment=True)
    except Exception:  # noqa: BLE001 - a cache outage must not turn submissions into errors
        log.warning("rate limit %s not counted: the cache is unreachable", group, exc_info=True)
        return None
    if usage is None or not usage["should_limit"]:
        return None
    retry_after = max(1, int(usage["time_left"]))
    return Refusal(
        message=(f"Too many {what} ({usage['limit']} allowed per {_period(rate)}). "
                 f"Try again in {retry_after} seconds."),
        retry_after=retry_after,
    )


_NOT_REDIS = object()


def _redis_usage(request: HttpRequest, *, group: str, key: str, rate: str):
    """django-ratelimit's count in one Redis round trip instead of three, or ``_NOT_REDIS``.

    ``get_usage`` adds the counter (``cache.add``), then increments it with ``cache.incr``, which
    Django's Redis cache does as EXISTS and INCR. Here the same key, window and expiry, in one
    MULTI/EXEC: ``SET key 0 EX period+fudge NX`` then ``INCR key``, so the first request of a
    window counts 1 as with ``add`` and the counter never outlives its window.
    """
    cache = ratelimit_core.caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    if not isinstance(cache, DjangoRedisCache) or not getattr(settings, "RATELIMIT_ENABLE", True):
        return _NOT_REDIS
    value = ratelimit_core._SIMPLE_KEYS["ip"](request) if key == "ip" else key
    limit, period = ratelimit_core._split_rate(rate)
    window = ratelimit_core._get_window(value, period)
    cache_key = cache.make_and_validate_key(
        ratelimit_core._make_cache_key(group, window, rate, value, ratelimit_core.ALL))
    client = cache._cache.get_client(cache_key, write=True)
    with client.pipeline(transaction=True) as pipe:
        pipe.set(cache_key, 0, ex=period + ratelimit_core.EXPIRATION_FUDGE, nx=True)
        pipe.incr(cache_key)
        count = pipe.execute()[1]
    return {"count": count, "limit": limit, "should_limit": count > limit, "time_left": window - int(time.time())}


def check_all(request: HttpRequest, *, group: str, keys: list[tuple[str, str]], what: str) -> Refusal | None:
    """``check`` for several ``(key, setting)`` pairs; the first refusal, counting every key."""
    refusals = [check(request, group=f"{group}:{setting}", key=key, setting=setting, what=what)
                for key, setting in keys]
    return next((r for r in refusals if r is not None), None)


def _period(rate: str) -> str:
    count, _, period = rate.partition("/")
    unit = {"s": "second", "m": "minute", "h": "hour", "d": "day"}.get(period[-1:], period)
    number = period[:-1]
    return f"{number} {unit}s" if number not in ("", "1") else unit


def json_response(refusal: Refusal) -> JsonResponse:
    response = JsonResponse({"ok": False, "error": refusal.message}, status=429)
    response["Retry-After"] = str(refusal.retry_after)
    return response


def html_response(refusal: Refusal, title: str = "Too many requests") -> HttpResponse:
    body = (f"<!doctype html><meta charset=utf-8><title>{escape(title)}</title>"
            f"<h1>{escape(title)}</h1><p>{escape(refusal.message)}</p>")
    response = HttpResponse(body, status=429, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(refusal.retry_after)
    return response


def login_limited(view: Callable) -> Callable:
    """Limit POSTs to a sign-in view per client IP and per user name tried."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if request.method == "POST":
            username = str(request.POST.get("username", "")).strip().lower()[:150]
            keys = [("ip", "RATELIMIT_LOGIN_IP")]
            if username:
                keys.append((f"user:{username}", "RATELIMIT_LOGIN_USER"))
            refusal = check_all(request, group="login", keys=keys, what="sign-in attempts")
            if refusal is not None:
                return html_response(refusal, "Too many sign-in attempts")
        return view(request, *args, **kwargs)

    return wrapped


def submission_ip_refusal(request: HttpRequest, *, group: str) -> Refusal | None:
    """The limit on answer submissions per client IP (counted before anything else is read)."""
    return check(request, group=f"{group}:ip", key="ip", setting="RATELIMIT_SUBMIT_IP", what="submissions")


def submission_worker_refusal(request: HttpRequest, *, group: str, worker_id: str) -> Refusal | None:
    """The limit on answer submissions per worker id."""
    if not worker_id:
        return None
    return check(request, group=f"{group}:worker", key=f"worker:{worker_id[:128]}",
                 setting="RATELIMIT_SUBMIT_WORKER", what="submissions")
