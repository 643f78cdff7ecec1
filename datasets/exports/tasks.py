"""Celery tasks of exports: thin, they take an id and call the service."""
from __future__ import annotations

from celery import shared_task

from datasets.exports.service import export_build


@shared_task(name="datasets.export_build", ignore_result=True)
def export_build_task(export_id: int) -> None:
    """Build one export; returns quietly if it is gone, cancelled or already taken."""
    export_build(export_id=export_id)
