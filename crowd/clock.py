"""The crowd layer's one clock seam: every business time (expiry, token age) is read here, so
tests move time by patching ``now`` instead of sleeping (as Django's ``tokens._today``)."""
from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()
