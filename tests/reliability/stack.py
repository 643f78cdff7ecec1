"""The production shape for fault tests: gunicorn (and, when asked, Celery) on a real PostgreSQL
server and a real Redis, started here on loopback, with services the tests can restart."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.services import PG_BIN, PostgresServer, RedisServer, ServiceError, _stop, _tail, free_port, stop_groups, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class RestartablePostgres(PostgresServer):
    """PostgreSQL restarted as an operator does (stop, then start), cutting every connection.

    ``pg_ctl restart`` is not used: it does not take ``-l``, so the new server would write to
    pg_ctl's own output and a caller that reads that output would wait for ever.
    """

    def start(self) -> "RestartablePostgres":
        super().start()
        return self

    def down(self) -> None:
        done = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        if done.returncode:
            raise ServiceError(f"pg_ctl stop failed: {done.stderr}\n{_tail(self.log)}")

    def up(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200")
        done = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                         "-t", "60", "start")
        if done.returncode:
            raise ServiceError(f"pg_ctl start failed: {done.stderr}\n{_tail(self.log)}")

    def restart(self, pause: float = 0.0) -> None:
        self.down()
        time.sleep(pause)
        self.up()


class RestartableRedis(RedisServer):
    """redis-server that can be stopped and started again on the same port (an upgrade, a crash)."""

    def start(self) -> "RestartableRedis":
        super().start()
        self.args = self.proc.args
        return self

    def down(self) -> None:
        _stop(self.proc)

    def up(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=20, proc=self.proc, log=self.log)


@dataclass
class Stack:
    pg: RestartablePostgres
    redis: RestartableRedis
    env: dict
    var: Path
    base: str = ""
    procs: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)

    def manage(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def shell(self, code: str) -> dict:
        """Run Django code in the stack's settings; it prints one JSON line last."""
        out = self.manage("shell", "--no-imports", "-c", code)
        return json.loads(out.strip().splitlines()[-1])

    def sql(self, query: str, *params) -> list[tuple]:
        with psycopg.connect(f"host=127.0.0.1 port={self.pg.port} user=postgres dbname=annotator") as conn:
            return conn.execute(query, params).fetchall()

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        self.logs[name] = self.var / f"{name}.log"
        with self.logs[name].open("wb") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_web(self, workers: int = 2) -> None:
        port = free_port()
        proc = self.start("web", [str(BIN / "gunicorn"), "annotator.wsgi:application", "--bind", f"127.0.0.1:{port}",
                                  "--workers", str(workers), "--threads", "4", "--timeout", "60"])
        wait_for_port(port, timeout=60, proc=proc, log=self.logs["web"])
        self.base = f"http://127.0.0.1:{port}"

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    def stop(self) -> None:
        stop_groups(self.procs.values())
        self.redis.stop()
        self.pg.stop()


def make_stack(tmp: Path, **extra_env: str) -> Stack:
    pg = RestartablePostgres().start()
    try:
        redis = RestartableRedis().start()
    except ServiceError:
        pg.stop()
        raise
    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE annotator")
    var = tmp / "var"
    var.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE",)}
    env.update({
        "DEBUG": "false", "SECRET_KEY": "reliability-" + "r" * 50,
        "DATABASE_URL": pg.url, "CELERY_BROKER_URL": redis.url, "CACHE_URL": redis.url.replace("/0", "/1"),
        "ALLOWED_HOSTS": "127.0.0.1,localhost", "ANNOTATOR_VAR_DIR": str(var), "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false", "SERVE_MEDIA": "true",
        "MARKETPLACE_ALLOW_HTTP_LOOPBACK": "true", "CROWD_ALLOW_HTTP_LOOPBACK": "true",
        "SERVICE_UNAVAILABLE_RETRY_AFTER": "1",
        # The clients below are many fast workers from one address: no rate limits in the way.
        "RATELIMIT_SUBMIT_IP": "", "RATELIMIT_SUBMIT_WORKER": "", "RATELIMIT_LOGIN_IP": "", "RATELIMIT_LOGIN_USER": "",
    })
    env.update(extra_env)
    stack = Stack(pg=pg, redis=redis, env=env, var=var)
    try:
        stack.manage("migrate", "--noinput")
    except BaseException:
        stack.stop()
        raise
    return stack
