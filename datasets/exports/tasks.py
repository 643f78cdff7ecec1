"""Celery tasks of exports: thin, they take an id and call the service."""
from __future__ import annotations

from celery import shared_task

from datasets.exports.service import export_build, export_recover


# acks_late: the message stays with the broker until the build ends, so an export queued to a
# worker that dies before claiming it is delivered again (the claim makes a second run a no-op).
# A build that dies after claiming is restarted by ``exports_recover`` when its lease runs out.
@shared_task(name="datasets.export_build", ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def export_build_task(export_id: int) -> None:
    """Build one export; returns quietly if it is gone, cancelled or already taken."""
    export_build(export_id=export_id)


@shared_task(name="datasets.exports_recover", ignore_result=True)
def exports_recover_task() -> dict:
    """Beat: start again the exports whose worker stopped renewing its lease."""
    return export_recover()
