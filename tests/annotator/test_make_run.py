"""What `make run` starts: the platform on its embedded defaults (SQLite, local files, a Celery
worker and beat on kombu's filesystem broker), with the admin and the demo project, stopped by
Ctrl-C, and reused when started again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = ("DATABASE_URL", "CELERY_", "AWS_", "SECURE_", "SESSION_", "CSRF_", "DJANGO_ALLOW_ASYNC_UNSAFE",
             "ALLOWED_HOSTS", "SERVE_MEDIA", "SECRET_KEY", "PUBLIC_BASE_URL", "TEST_SQLITE_NAME")

# Kinds of the demo's published crowd HITs, and the marketplace's HITs.
DEMO_HITS = ("from crowd.models import HIT; from crowd.marketplace.models import HIT as M; "
             "print(HIT.objects.exclude(provider_hit_id=None).values('stage__kind').distinct().count(), "
             "M.objects.count())")


def platform_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(TEST_ONLY)}
    env.update({"DEBUG": "true", "ANNOTATOR_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"})
    return env


class Platform:
    def __init__(self, var_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.env = platform_env(var_dir)
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "runplatform", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"runplatform exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen after {timeout}s:\n{self.output()[-4000:]}")
            time.sleep(0.3)

    def get(self, path: str):
        deadline = time.monotonic() + 30
        while True:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10)
            except (ConnectionError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def shell(self, code: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=40)


def child_pids(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.services
def test_run_starts_everything_with_the_demo_and_stops_on_ctrl_c(tmp_path):
    var = tmp_path / "var"
    first = Platform(var, tmp_path / "first.log")
    try:
        first.wait_for("Annotator is running")
        out = first.output()
        assert "Created the admin account: admin / " in out
        password = out.split("Created the admin account: admin / ", 1)[1].split()[0]
        assert (var / "admin-password.txt").read_text().strip() == password

        with first.get("/readyz") as response:
            checks = json.loads(response.read())["checks"]
        assert all(check["ok"] for check in checks.values()), checks
        with first.get("/admin/login/") as response:
            assert response.status == 200

        demo = json.loads(first.shell(
            "import json; from datasets.models import Project; p = Project.objects.get(name='Demo: everyday photos'); "
            "print(json.dumps({'images': p.images.count(), 'categories': p.categories.count(), "
            "'supercategories': p.categories.values('supercategory').distinct().count(), "
            "'licensed': p.images.exclude(license='').exclude(attribution='').count()}))"
        ))
        assert demo == {"images": 5, "categories": 80, "supercategories": 12, "licensed": 5}

        # The worker started by `make run` consumes from the filesystem broker.
        task_id = first.shell("from annotator.celery import ping; print(ping.delay().id)")
        first.wait_for(f"annotator.ping[{task_id}] succeeded", timeout=60)

        # demo_crowd: the demo's HITs (all five tools) are published through boto3 by the worker.
        worker_password = out.split("Created the demo worker: worker / ", 1)[1].split()[0]
        assert (var / "worker-password.txt").read_text().strip() == worker_password
        assert "demo worker " in out.split("Annotator is running", 1)[1]
        deadline = time.monotonic() + 120
        while (kinds := first.shell(DEMO_HITS)) != "5 6" and time.monotonic() < deadline:
            time.sleep(1)
        assert kinds == "5 6", first.output()[-4000:]

        children = child_pids(first.proc.pid)
        assert len(children) == 3  # web, worker, beat
        assert first.interrupt() == 0
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in children)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()

    second = Platform(var, tmp_path / "second.log")
    try:
        second.wait_for("Annotator is running")
        assert "Created the admin account" not in second.output()
        assert "Admin account: admin (its password is in" in second.output()
        counts = second.shell(
            "from datasets.models import Project, Image; print(Project.objects.count(), Image.objects.count())"
        )
        assert counts == "1 5"
        assert "Demo crowd: the demo's HITs are already published." in second.output()
        assert second.shell(DEMO_HITS) == "5 6"
        assert second.interrupt() == 0
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
