"""The Annotator Django project: settings, root URLs, the Celery app and shared plumbing."""
from .celery import app as celery_app

__all__ = ("celery_app",)
