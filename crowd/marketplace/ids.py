"""Identifiers shaped like MTurk's: 30 upper-case alphanumerics for entities, ``A`` + 13 for workers."""
from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_uppercase + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def entity_id() -> str:
    """A HIT, HIT type, assignment or qualification type id (30 characters, like 3SBX2M1TKD...)."""
    return _random(30)


def worker_id() -> str:
    """A worker id like A1B2C3D4E5F6G7 (14 characters)."""
    return "A" + _random(13)


def access_key_id() -> str:
    return "AKMK" + _random(16)


def secret_access_key() -> str:
    return secrets.token_urlsafe(30)[:40]


def invite_code() -> str:
    return secrets.token_urlsafe(12)
