"""Celery tasks of the project's own (found by ``app.autodiscover_tasks``)."""
from annotator.announce import drain_announced  # noqa: F401
