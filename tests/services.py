"""Real services on loopback for the tests: PostgreSQL, Redis, moto's S3 server, Celery workers.

Each class starts its process on a free port in a private temporary folder, waits until it
answers, and stops it on ``stop()``. A service that cannot start raises ``ServiceError`` with
its log: the tests that need it fail, they never skip.

Also a command: ``python -m tests.services postgres -- CMD ...`` runs CMD with DATABASE_URL
pointing at a fresh PostgreSQL server, then stops the server (``make test`` uses it for the
PostgreSQL pass).
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceError(f"nothing answered on port {port} after {timeout:.0f}s:\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def stop_groups(procs, timeout: float = 20) -> None:
    """SIGTERM every process group (each started with ``start_new_session``), then SIGKILL the
    groups still running after ``timeout``."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class PostgresServer:
    """A throwaway PostgreSQL 15 cluster: trust auth, fsync off, socket in its own folder.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="annotator-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.user = "postgres"
        self._as_other = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_other:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> "PostgresServer":
        if not (PG_BIN / "initdb").exists():
            raise ServiceError(f"PostgreSQL is not installed: {PG_BIN / 'initdb'} is missing (apt-get install postgresql-15)")
        if self._as_other:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.dir.chmod(0o755)
        done = self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        if done.returncode:
            raise ServiceError(f"initdb failed: {done.stderr or done.stdout}")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        done = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        if done.returncode:
            raise ServiceError(f"pg_ctl start failed: {done.stderr or done.stdout}\n{_tail(self.log)}")
        return self

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/annotator"

    def restart(self) -> None:
        done = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "restart")
        if done.returncode:
            raise ServiceError(f"pg_ctl restart failed: {done.stderr}\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="annotator-redis-"))
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        exe = shutil.which("redis-server")
        if not exe:
            raise ServiceError("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=20, proc=self.proc, log=self.log)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class MotoS3Server:
    """moto's standalone server: S3 on loopback for django-storages."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="annotator-moto-"))
        self.log = self.dir / "moto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MotoS3Server":
        exe = Path(sys.executable).with_name("moto_server")
        if not exe.exists():
            raise ServiceError("moto_server is not installed (pip install 'moto[server]')")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=30, proc=self.proc, log=self.log)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class CeleryWorker:
    """A real ``celery worker`` process of the annotator app, with the environment given."""

    def __init__(self, env: dict[str, str], *, concurrency: int = 2, pool: str = "prefork", queues: str = "annotator") -> None:
        self.env = {**os.environ, **env}
        self.concurrency = concurrency
        self.pool = pool
        self.queues = queues
        self.dir = Path(tempfile.mkdtemp(prefix="annotator-celery-"))
        self.log = self.dir / "worker.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *, timeout: float = 60) -> "CeleryWorker":
        ready = self.dir / "ready"
        cmd = [sys.executable, "-m", "celery", "-A", "annotator", "worker", "--loglevel=INFO",
               f"--pool={self.pool}", f"--concurrency={self.concurrency}", "-Q", self.queues,
               "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}-{time.monotonic_ns()}@%h"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"celery worker exited with {self.proc.returncode}:\n{_tail(self.log)}")
            if " ready." in self.log.read_text(errors="replace"):
                ready.touch()
                return self
            time.sleep(0.2)
        raise ServiceError(f"celery worker not ready after {timeout:.0f}s:\n{_tail(self.log)}")

    def kill(self) -> None:
        """SIGKILL the whole process group, as an out-of-memory killer or a lost machine would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "postgres" or argv[1] != "--":
        print("usage: python -m tests.services postgres -- CMD [ARGS...]", file=sys.stderr)
        return 2
    server = PostgresServer().start()
    try:
        env = {**os.environ, "DATABASE_URL": server.url}
        print(f"PostgreSQL 15 on 127.0.0.1:{server.port} for: {' '.join(argv[2:])}", flush=True)
        return subprocess.call(argv[2:], env=env)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
