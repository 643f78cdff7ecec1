"""``manage.py runplatform``: what ``make run`` starts.

Migrates, makes the admin account once, loads the demo project, then runs the web server, a
Celery worker and Celery beat as child processes, prints where to go, and stops all three on
Ctrl-C (or when any of them dies). Running it again reuses the database, media and admin.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

ADMIN_USERNAME = "admin"


def ensure_admin(stdout) -> None:
    """Create the admin account on the first run and print its password (also kept in var/)."""
    User = get_user_model()
    password_file = settings.VAR_DIR / "admin-password.txt"
    if User.objects.filter(username=ADMIN_USERNAME).exists():
        hint = f" (its password is in {password_file})" if password_file.exists() else ""
        stdout.write(f"Admin account: {ADMIN_USERNAME}{hint}")
        return
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(ADMIN_USERNAME, email="", password=password)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    stdout.write(f"Created the admin account: {ADMIN_USERNAME} / {password}  (kept in {password_file})")


class Command(BaseCommand):
    help = "Set up and run the whole platform: web server, Celery worker and Celery beat."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-demo", action="store_true", help="Do not load the demo project.")

    def handle(self, *args, port: int, host: str, no_demo: bool, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        ensure_admin(self.stdout)
        if not no_demo:
            call_command("load_demo", owner=ADMIN_USERNAME)

        env = {**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        commands = {
            "web": [python, manage, "runserver", f"{host}:{port}", "--noreload", "--insecure"],
            "worker": [python, "-m", "celery", "-A", "annotator", "worker", "--loglevel=INFO",
                       "--concurrency=2", "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "-n", "worker@%h"],
            "beat": [python, "-m", "celery", "-A", "annotator", "beat", "--loglevel=INFO",
                     "-s", settings.CELERY_BEAT_SCHEDULE_FILENAME],
        }
        procs: dict[str, subprocess.Popen] = {}
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, cwd=settings.BASE_DIR, env=env, start_new_session=True)

        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        demo_worker = ""
        if not no_demo:
            # Only queues Celery tasks (retried until the web server answers) and makes the demo worker.
            try:
                call_command("demo_crowd", owner=ADMIN_USERNAME, base_url=env["PUBLIC_BASE_URL"])
                demo_worker = (f"  demo worker       {base}/market/ as worker "
                               f"(password in {settings.VAR_DIR / 'worker-password.txt'})\n")
            except Exception as exc:  # the platform runs without the demo's HITs
                self.stderr.write(f"demo_crowd failed: {exc}")
        broker = settings.CELERY_BROKER_URL.split("://")[0]
        self.stdout.write(self.style.SUCCESS(
            "\nAnnotator is running:\n"
            f"  home              {base}/\n"
            f"  requester admin   {base}/admin/\n"
            f"  worker market     {base}/market/\n"
            f"{demo_worker}"
            f"  REST API docs     {base}/api/docs/\n"
            f"  MTurk-style API   {base}/mturk-api/\n"
            f"  health            {base}/readyz\n"
            f"Celery worker and beat run on the {broker} broker. Press Ctrl-C to stop everything.\n"
        ))

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping the others.")
                        exit_code = proc.returncode or 1
                        stopping = True
                        break
                time.sleep(0.5)
        finally:
            # Only the main process of each gets SIGTERM: Celery then shuts its pool down warmly.
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            deadline = time.monotonic() + 15
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            self.stdout.write("Stopped.")
        if exit_code:
            sys.exit(exit_code)
