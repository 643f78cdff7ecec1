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
    return _check_many(request, [(group, key, setting)], what)


def check_all(request: HttpRequest, *, group: str, keys: list[tuple[str, str]], what: str) -> Refusal | None:
    """``check`` for several ``(key, setting)`` pairs, counted together (one Redis round trip);
    the first refusal, every key being counted."""
    return _check_many(request, [(f"{group}:{setting}", key, setting) for key, setting in keys], what)


def _check_many(request: HttpRequest, items: list[tuple[str, str, str]], what: str) -> Refusal | None:
    rated = [(group, key, rate) for group, key, setting in items if (rate := _rate(setting)) is not None]
    if not rated:
        return None
    try:
        usages = _redis_usages(request, rated)
        if usages is _NOT_REDIS:
            usages = [get_usage(request, group=group, rate=rate, increment=True,
                                key=key if key == "ip" else (lambda _group, _request, key=key: key))
                      for group, key, rate in rated]
    except Exception:  # noqa: BLE001 - a cache outage must not turn submissions into errors
        log.warning("rate limits %s not counted: the cache is unreachable", [g for g, _, _ in rated], exc_info=True)
        return None
    for (_, _, rate), usage in zip(rated, usages):
        if usage is not None and usage["should_limit"]:
            retry_after = max(1, int(usage["time_left"]))
            return Refusal(
                message=(f"Too many {what} ({usage['limit']} allowed per {_period(rate)}). "
                         f"Try again in {retry_after} seconds."),
                retry_after=retry_after,
            )
    return None


_NOT_REDIS = object()

# For each key: start its counter at 0 with the window's expiry unless it exists, then count one.
_COUNT_LUA = """
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'EX', ARGV[i], 'NX')
  counts[i] = redis.call('INCR', key)
end
return counts
"""
_count_script = None


def _redis_usages(request: HttpRequest, rated: list[tuple[str, str, str]]):
    """django-ratelimit's counts for ``(group, key, rate)`` in one Redis round trip, or ``_NOT_REDIS``.

    ``get_usage`` adds each counter (``cache.add``), then increments it with ``cache.incr``, which
    Django's Redis cache does as EXISTS and INCR: three round trips per limit. Here every limit of
    a request at once, in one script run atomically by Redis: the same keys, windows and expiry,
    ``SET key 0 EX period+fudge NX`` then ``INCR key``, so the first request of a window counts 1
    as with ``add`` and no counter outlives its window.
    """
    global _count_script
    cache = ratelimit_core.caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    if not isinstance(cache, DjangoRedisCache) or not getattr(settings, "RATELIMIT_ENABLE", True):
        return _NOT_REDIS
    keys, expiries, plans = [], [], []
    now = int(time.time())
    for group, key, rate in rated:
        value = ratelimit_core._SIMPLE_KEYS["ip"](request) if key == "ip" else key
        limit, period = ratelimit_core._split_rate(rate)
        window = ratelimit_core._get_window(value, period)
        keys.append(cache.make_and_validate_key(
            ratelimit_core._make_cache_key(group, window, rate, value, ratelimit_core.ALL)))
        expiries.append(period + ratelimit_core.EXPIRATION_FUDGE)
        plans.append((limit, window))
    client = cache._cache.get_client(keys[0], write=True)  # writes all go to the first server
    if _count_script is None:
        _count_script = client.register_script(_COUNT_LUA)
    counts = _count_script(keys=keys, args=expiries, client=client)
    return [{"count": count, "limit": limit, "should_limit": count > limit, "time_left": window - now}
            for count, (limit, window) in zip(counts, plans)]


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


def submission_refusal(request: HttpRequest, *, group: str, worker_id: str = "") -> Refusal | None:
    """The limits on answer submissions per client IP and, when known, per worker id, counted
    together (one Redis round trip)."""
    items = [(f"{group}:ip", "ip", "RATELIMIT_SUBMIT_IP")]
    if worker_id:
        items.append((f"{group}:worker", f"worker:{worker_id[:128]}", "RATELIMIT_SUBMIT_WORKER"))
    return _check_many(request, items, "submissions")


def submission_worker_refusal(request: HttpRequest, *, group: str, worker_id: str) -> Refusal | None:
    """The limit on answer submissions per worker id."""
    if not worker_id:
        return None
    return check(request, group=f"{group}:worker", key=f"worker:{worker_id[:128]}",
                 setting="RATELIMIT_SUBMIT_WORKER", what="submissions")
