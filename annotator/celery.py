"""The Celery app. Configuration comes from Django settings under the CELERY_ prefix."""
import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotator.settings")
# The embedded broker writes each message atomically (see annotator/broker.py).
TRANSPORT_ALIASES["filesystem"] = "annotator.broker:Transport"

app = Celery("annotator")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="annotator.ping")
def ping(*_ids) -> str:
    """A no-op task used by health checks and tests to prove a worker is consuming (it takes
    ids too, so that the tests can announce to it: annotator/announce.py)."""
    return "pong"
