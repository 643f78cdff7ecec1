"""Provider secrets at rest, keyed from SECRET_KEY (``annotator.secretbox``).

CROWD_SECRET_KEYS (newest first) lets an operator rotate: set the new key first, keep the old
ones after it until ``crowd_credentials_rotate`` has re-encrypted them.
"""
from __future__ import annotations

from django.conf import settings

from annotator.secretbox import SecretBox, SecretUnreadable

__all__ = ["SecretUnreadable", "decrypt", "encrypt", "rotate"]

_box = SecretBox(
    salt=b"annotator.crowd.provider-credentials:",
    materials=lambda: list(getattr(settings, "CROWD_SECRET_KEYS", []) or []) or [settings.SECRET_KEY],
    unreadable="the provider secret cannot be decrypted with this server's key; enter the credentials again",
)
encrypt, decrypt, rotate = _box.encrypt, _box.decrypt, _box.rotate
