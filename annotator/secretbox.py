"""Secrets at rest, shared by every app that must keep one it can read back (SigV4 needs the
secret itself): Fernet (AES-128-CBC with HMAC-SHA256) under keys derived from server-side
material, one salt per use, and MultiFernet so that an operator can rotate the material.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with this server's keys (the key material changed)."""


class SecretBox:
    """Encrypts and decrypts text under ``materials()`` (newest first), each hashed with ``salt``."""

    def __init__(self, *, salt: bytes, materials: Callable[[], list[str]], unreadable: str) -> None:
        self._salt = salt
        self._materials = materials
        self._unreadable = unreadable

    def _fernet(self) -> MultiFernet:
        keys = [hashlib.sha256(self._salt + m.encode()).digest() for m in self._materials()]
        return MultiFernet([Fernet(base64.urlsafe_b64encode(k)) for k in keys])

    def encrypt(self, secret: str) -> str:
        return self._fernet().encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet().decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretUnreadable(self._unreadable) from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt under the newest key material."""
        return self._fernet().rotate(token.encode()).decode()
