"""Crowd providers: the interface (``base``) and the one boto3 adapter (``mturk``).

``provider_for(project)`` is how services get a provider; tests and the benchmark swap it by
pointing MTURK_ENDPOINT_URL at another endpoint, never by replacing the adapter.
"""
from __future__ import annotations

from typing import Any

from crowd.providers.base import CrowdProvider


def provider_for(project: Any | None = None) -> CrowdProvider:
    from crowd.providers.mturk import MTurkProvider

    return MTurkProvider.for_project(project)
