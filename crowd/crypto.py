"""Provider secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) keyed from SECRET_KEY.

A MultiFernet over CROWD_SECRET_KEYS (newest first) lets an operator rotate: set the new key
first, keep the old ones after it until ``crowd_credentials_rotate`` has re-encrypted them.
"""
from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

_SALT = b"annotator.crowd.provider-credentials:"


class SecretUnreadable(Exception):
    """The stored secret cannot be decrypted with this server's keys (SECRET_KEY changed)."""


def _key(material: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(_SALT + material.encode()).digest()))


def _fernet() -> MultiFernet:
    materials = list(getattr(settings, "CROWD_SECRET_KEYS", []) or []) or [settings.SECRET_KEY]
    return MultiFernet([_key(m) for m in materials])


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "the provider secret cannot be decrypted with this server's key; enter the credentials again"
        ) from exc


def rotate(token: str) -> str:
    return _fernet().rotate(token.encode()).decode()
