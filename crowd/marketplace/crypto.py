"""Requester secrets at rest (``annotator.secretbox``), keyed from MARKETPLACE_SECRET_KEY when set,
else SECRET_KEY, so a database dump alone does not reveal any requester's secret access key.
"""
from __future__ import annotations

from django.conf import settings

from annotator.secretbox import SecretBox, SecretUnreadable

__all__ = ["SecretUnreadable", "decrypt", "encrypt"]

_box = SecretBox(
    salt=b"annotator.marketplace.requester-secrets:",
    materials=lambda: [getattr(settings, "MARKETPLACE_SECRET_KEY", "") or settings.SECRET_KEY],
    unreadable="the requester secret cannot be decrypted with this server's key",
)
encrypt, decrypt = _box.encrypt, _box.decrypt
