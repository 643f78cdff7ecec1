"""Fixtures of the attack tests: the tools' project, the marketplace on a live server, the API's
world of projects and roles, each borrowed from the suite that owns it."""
from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.frontend.conftest import categories, images, point, project  # noqa: F401 - fixtures
from tests.marketplace.conftest import market, time_machine  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def fresh_counters():
    """Rate-limit counters and throttle buckets live in the cache: each test starts from zero."""
    cache.clear()
    yield
    cache.clear()
