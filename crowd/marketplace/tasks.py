"""Periodic marketplace work, thin: call the service that applies what time has made due."""
from __future__ import annotations

from celery import shared_task

from crowd.marketplace import services


@shared_task(name="marketplace.catch_up", ignore_result=True)
def marketplace_catch_up() -> dict:
    """Abandon overdue accepted work, auto-approve due submissions, release money of expired HITs.

    Idempotent: every step re-checks its row under a lock, so overlapping runs change nothing twice.
    """
    return services.catch_up()
