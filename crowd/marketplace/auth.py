"""Requester authentication (AWS Signature Version 4) and per-key rate limiting; and the sign-in
backend that reads a worker's profile with their user.

The signature is recomputed with botocore's own ``SigV4Auth`` over an ``AWSRequest`` rebuilt
from the incoming method, URL, the headers the client says it signed, and the body, then compared
with ``hmac.compare_digest``. The date must be within 15 minutes of the real clock (not the
business clock seam). Rate limiting is a token bucket per access key kept in Django's cache.
"""
from __future__ import annotations

import hmac
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied

from annotator.prepared import PreparedQuery
from crowd.marketplace import crypto, errors
from crowd.marketplace.models import RequesterKey

SERVICE = "mturk-requester"
MAX_SKEW = timedelta(minutes=15)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;\-]+),\s*Signature=(?P<sig>[0-9a-f]{64})\s*$"
)


def _invalid_signature(message: str = "The request signature we calculated does not match the signature you "
                       "provided. Check your AWS Secret Access Key and signing method.") -> errors.AuthError:
    return errors.AuthError("InvalidSignatureException", message)


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    url: str
    headers: dict[str, str]  # lower-case names
    body: bytes


_active_key = PreparedQuery(
    lambda access_key_id: RequesterKey.objects.select_related("account", "account__user")
    .filter(access_key_id=access_key_id, is_active=True).order_by("pk")[:1], str)


def authenticate(req: IncomingRequest) -> RequesterKey:
    """The active key that signed ``req``, or an ``AuthError`` shaped like AWS's."""
    header = req.headers.get("authorization", "")
    if not header:
        raise errors.AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTH.match(header)
    if not match:
        raise errors.AuthError("IncompleteSignatureException",
                               "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                               "in the AWS4-HMAC-SHA256 format.")
    key = _active_key.first(match["key"])
    if key is None:
        raise errors.AuthError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if match["service"] != SERVICE:
        raise _invalid_signature(f"Credential should be scoped to correct service: '{SERVICE}'.")
    amz_date = req.headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise _invalid_signature("The request must contain a valid X-Amz-Date header (YYYYMMDDTHHMMSSZ).") from None
    real_now = datetime.now(timezone.utc)
    if abs(real_now - signed_at) > MAX_SKEW:
        raise _invalid_signature(
            f"Signature expired: {amz_date} is now earlier than {(real_now - MAX_SKEW).strftime('%Y%m%dT%H%M%SZ')} "
            f"({real_now.strftime('%Y%m%dT%H%M%SZ')} - 15 min.)")
    if match["date"] != amz_date[:8]:
        raise _invalid_signature("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.")
    signed_names = match["signed"].split(";")
    if "host" not in signed_names:
        raise _invalid_signature("'Host' must be a signed header.")
    missing = [name for name in signed_names if name not in req.headers]
    if missing:
        raise _invalid_signature(f"Signed headers are missing from the request: {', '.join(missing)}.")
    try:
        secret = crypto.decrypt(key.secret_encrypted)
    except crypto.SecretUnreadable:
        raise errors.AuthError("UnrecognizedClientException", "The security token included in the request is invalid.") from None

    rebuilt = AWSRequest(method=req.method, url=req.url, data=req.body,
                         headers={name: req.headers[name] for name in signed_names})
    rebuilt.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(key.access_key_id, secret), SERVICE, match["region"])
    canonical = signer.canonical_request(rebuilt)
    expected = signer.signature(signer.string_to_sign(rebuilt, canonical), rebuilt)
    if not hmac.compare_digest(expected.encode(), match["sig"].encode()):
        raise _invalid_signature()
    return key


def note_use(key: RequesterKey) -> None:
    """Record when a key was last used, at most once a minute (no write on every request)."""
    real_now = datetime.now(timezone.utc)
    if key.last_used_at is None or real_now - key.last_used_at > timedelta(minutes=1):
        RequesterKey.objects.filter(pk=key.pk).update(last_used_at=real_now)


_bucket_lock = threading.Lock()


def throttle(access_key_id: str) -> None:
    """Take one token from the key's bucket, or raise ``Throttled`` (MTurk's ThrottlingException)."""
    rate = float(getattr(settings, "MARKETPLACE_API_RATE", 20.0))
    burst = float(getattr(settings, "MARKETPLACE_API_BURST", 100.0))
    if rate <= 0:
        return
    cache_key = f"marketplace:bucket:{access_key_id}"
    with _bucket_lock:
        now = time.time()  # wall clock: the bucket may live in a cache shared by several hosts
        tokens, last = cache.get(cache_key) or (burst, now)
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            cache.set(cache_key, (tokens, now), timeout=3600)
            raise errors.Throttled()
        cache.set(cache_key, (tokens - 1.0, now), timeout=3600)


# --- Workers signing in --------------------------------------------------------------------------

class WorkerModelBackend(ModelBackend):
    """Django's ModelBackend, loading the signed-in user's WorkerProfile in the same query.

    Every worker page reads ``user.worker_profile`` right after the user: one LEFT JOIN instead
    of a second query on each request. ``settings.AUTHENTICATION_BACKENDS`` lists it first and
    Django's ModelBackend after it, only so that sessions signed in before it was added stay
    valid (Django checks a session's backend path against the list). A password that does not
    match stops there (``PermissionDenied``): it is never hashed a second time by ModelBackend.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None and password is not None:
            raise PermissionDenied  # the same check ModelBackend would repeat
        return user

    def get_user(self, user_id):
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user = _user_with_profile.first(user_id)
        else:  # a user model whose key is not an integer
            user = _user_with_profile_query(user_id).first()
        return user if user is not None and self.user_can_authenticate(user) else None


def _user_with_profile_query(user_id):
    from django.contrib.auth import get_user_model

    return get_user_model()._default_manager.select_related("worker_profile").filter(pk=user_id).order_by()[:1]


# Compiled once per process: this runs on every signed-in request.
_user_with_profile = PreparedQuery(_user_with_profile_query, int)
