"""Operations promises that need no running service: every model change has its migration (so
an upgrade is ``manage.py migrate`` and nothing else), and beat runs the recoveries."""
from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import call_command


@pytest.mark.django_db
def test_every_model_change_has_its_migration():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=io.StringIO())
    assert "No changes detected" in out.getvalue()


def test_beat_restarts_stranded_exports_and_catches_up_the_marketplace():
    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["datasets.exports_recover"] <= settings.EXPORT_LEASE_SECONDS
    assert "marketplace.catch_up" in schedule and "crowd.sync_all" in schedule
