"""The marketplace's one clock seam.

Every business time (HIT expiry, assignment deadlines, auto-approval) is read through ``now()``,
so tests move time by patching this function instead of sleeping (as Django's
``tokens._today``). Request signatures are checked against the real clock, never this one.
"""
from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()
