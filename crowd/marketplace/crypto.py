"""Requester secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a server-side key.

The key is derived from ``settings.MARKETPLACE_SECRET_KEY`` when set, else from ``SECRET_KEY``,
so a database dump alone does not reveal any requester's secret access key.
"""
from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnreadable(Exception):
    """The stored secret cannot be decrypted with this server's key (the key changed)."""


def _fernet() -> Fernet:
    material = getattr(settings, "MARKETPLACE_SECRET_KEY", "") or settings.SECRET_KEY
    digest = hashlib.sha256(b"annotator.marketplace.requester-secrets:" + material.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("the requester secret cannot be decrypted with this server's key") from exc
