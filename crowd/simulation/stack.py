"""The platform on loopback for ``manage.py simulate`` when no running one is named: Django's
threaded WSGI server in this process and a real Celery worker process on the same database and
broker, both pointed at each other's address.

The server runs here so the simulation can set what only a test crowd needs: plain http on
loopback, and rate limits lifted (a dozen simulated workers answer faster than people).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the standard library's signature
        pass


class LocalStack:
    def __init__(self, *, worker_concurrency: int = 2) -> None:
        self.server: ThreadedWSGIServer | None = None
        self.worker: subprocess.Popen | None = None
        self.concurrency = worker_concurrency
        self.url = ""

    def __enter__(self) -> "LocalStack":
        self.server = ThreadedWSGIServer(("127.0.0.1", 0), _QuietHandler, allow_reuse_address=True)
        self.server.daemon_threads = True
        self.server.set_app(StaticFilesHandler(get_wsgi_application()))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        overrides = {
            "PUBLIC_BASE_URL": self.url, "MTURK_ENDPOINT_URL": self.url + "/mturk-api/",
            "CROWD_ALLOW_HTTP_LOOPBACK": True, "MARKETPLACE_ALLOW_HTTP_LOOPBACK": True,
            "TOOLS_FRAME_ANCESTORS": ["'self'", self.url], "SERVE_MEDIA": True, "RATELIMIT_ENABLE": False,
            "MARKETPLACE_API_RATE": 10_000.0, "MARKETPLACE_API_BURST": 10_000.0,
        }
        for name, value in overrides.items():
            setattr(settings, name, value)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        env = dict(os.environ, PUBLIC_BASE_URL=self.url, MTURK_ENDPOINT_URL=self.url + "/mturk-api/",
                   CROWD_ALLOW_HTTP_LOOPBACK="true", ANNOTATOR_VAR_DIR=str(settings.VAR_DIR),
                   DEBUG="true" if settings.DEBUG else os.environ.get("DEBUG", "false"))
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "annotator", "worker", "--loglevel", "WARNING",
             "--pool", "threads", "--concurrency", str(self.concurrency), "-Q", settings.CELERY_TASK_DEFAULT_QUEUE],
            cwd=Path(settings.BASE_DIR), env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr)
        return self

    def check(self) -> None:
        """Raise if the Celery worker process is gone (nothing would move the items on)."""
        if self.worker is not None and self.worker.poll() is not None:
            raise RuntimeError(f"the Celery worker stopped (exit code {self.worker.returncode})")

    def __exit__(self, *exc) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        if self.server:
            self.server.shutdown()
            self.server.server_close()
