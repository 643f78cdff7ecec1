"""Task flow, in process: what each request of one crowd task costs the web tier, beside the bare view.

    .venv/bin/python benchmarks/task_flow.py                  # 10 workers, 300 tasks
    .venv/bin/python benchmarks/task_flow.py --tasks 60       # quicker
    .venv/bin/python benchmarks/task_flow.py --profile accept # cProfile of one endpoint (or "all")
    .venv/bin/python benchmarks/task_flow.py --show-queries   # the SQL of one task, per endpoint

``benchmarks/load.py`` measures the production shape over HTTP; this script isolates the part
that sets its ratio: the CPU a request costs in Django. It starts PostgreSQL and Redis on
loopback (``tests.services``), configures Django from environment variables as ``load.py`` does
(DEBUG off, cache and Celery broker on Redis, the same middleware and limits raised), imports
small generated JPEGs into a project with 5 categories, and publishes category-labeling HITs
(2 images each, MaxAssignments 10) straight through the marketplace's services into a public
requester's group, whose invited workers are signed in. Then, in this one process and with no
HTTP in between (Django's test ``Client``, CSRF checks enforced), each worker in turn runs the
load's seven requests: ``accept`` (POST to the group), the ``work page``, the tools' ``task
page``, each ``image``, the ``answer`` JSON, and ``submit`` (``/mturk/externalSubmit``); and the
same number of requests of the baseline, ``/bench/row/<pk>`` (``annotator/benchviews.py``).

Per endpoint it reports CPU milliseconds per request (``time.process_time``: this process only,
so PostgreSQL's and Redis's own work is not counted), wall milliseconds, SQL queries per request
(counted by a database execute wrapper) and the CPU ratio to the bare view. The last line is one
JSON object. ``predicted_ratio`` is the bare view's CPU per request over the flow's mean CPU per
request: the throughput ratio ``load.py`` would reach if the web tier's CPU were all that counted.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENDPOINTS = ("accept", "work page", "task page", "image", "answer", "submit")
TASK_DATA = re.compile(rb'<script id="task-data" type="application/json">(.*?)</script>', re.S)
FRAME = re.compile(rb'<iframe class="task" src="([^"]+)"')
HOST = "127.0.0.1"
FORM = "application/x-www-form-urlencoded"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=300, help="tasks to run through the flow (default 300)")
    p.add_argument("--workers", type=int, default=10, help="workers taking turns (default 10)")
    p.add_argument("--assignments", type=int, default=10, help="MaxAssignments per HIT (default 10)")
    p.add_argument("--images-per-task", type=int, default=2)
    p.add_argument("--warmup", type=int, default=10, help="tasks run first and not counted (default 10)")
    p.add_argument("--profile", default="", help="cProfile one endpoint (a name above) or 'all'; prints the top")
    p.add_argument("--profile-out", default="", help="also write the profile's pstats file here (for pstats/snakeviz)")
    p.add_argument("--show-queries", action="store_true", help="print the SQL of one task, per endpoint")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.profile and args.profile not in ENDPOINTS + ("all", "baseline"):
        p.error(f"--profile takes one of {', '.join(ENDPOINTS)}, baseline or all")
    return args


# --- Services and Django --------------------------------------------------------------------------

class Services:
    def __init__(self) -> None:
        from tests.services import PostgresServer, RedisServer

        self.dir = Path(tempfile.mkdtemp(prefix="annotator-flow-"))
        self.pg = PostgresServer()
        self.redis = RedisServer()

    def start(self) -> dict[str, str]:
        import psycopg

        self.pg.start()
        self.redis.start()
        with psycopg.connect(f"host=127.0.0.1 port={self.pg.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE annotator")
        # What benchmarks/load.py gives gunicorn (docker-compose.yml, then plain HTTP on loopback).
        return {
            "DEBUG": "false", "SECRET_KEY": "task-flow-benchmark-" + "k" * 50,
            "DATABASE_URL": self.pg.url, "CELERY_BROKER_URL": self.redis.url,
            "CACHE_URL": self.redis.url.replace("/0", "/1"),
            "ALLOWED_HOSTS": "127.0.0.1,localhost", "ANNOTATOR_VAR_DIR": str(self.dir / "var"),
            "PUBLIC_BASE_URL": f"http://{HOST}",
            "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false",
            "MARKETPLACE_ALLOW_HTTP_LOOPBACK": "true", "CROWD_ALLOW_HTTP_LOOPBACK": "true",
            "RATELIMIT_LOGIN_IP": "1000000/m", "RATELIMIT_LOGIN_USER": "1000000/m",
            "RATELIMIT_SUBMIT_IP": "1000000/m", "RATELIMIT_SUBMIT_WORKER": "1000000/m",
            "BENCHMARK_VIEWS": "true", "SERVE_MEDIA": "true", "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "annotator.settings",
        }

    def stop(self) -> None:
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def django_setup(env: dict[str, str]) -> None:
    for name in ("DJANGO_ALLOW_ASYNC_UNSAFE", "CONN_MAX_AGE"):
        os.environ.pop(name, None)
    os.environ.update(env)
    import django

    django.setup()


# --- Setup: a project, its images, HITs in a public group, signed-in workers -------------------

class Setup:
    def __init__(self) -> None:
        self.hit_type_id = ""
        self.image_ids: list[int] = []
        self.clients: list = []


def setup_platform(args: argparse.Namespace, folder: Path) -> Setup:
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from benchmarks.load import write_jpegs
    from crowd.marketplace import services as market
    from datasets.models import Category, Image, Project
    from frontend import services as tools

    call_command("migrate", verbosity=0)
    owner = get_user_model().objects.create_user("flow-owner", password=None)
    project = Project.objects.create(name="Task flow benchmark", owner=owner, budget_usd=Decimal("1000000"))
    for coco_id, name, sup in [(1, "person", "person"), (3, "car", "vehicle"), (18, "dog", "animal"),
                               (47, "cup", "kitchen"), (62, "chair", "furniture")]:
        Category.objects.create(project=project, coco_id=coco_id, name=name, supercategory=sup)
    total = args.tasks + args.warmup
    n_hits = math.ceil(total / min(args.assignments, args.workers)) + 1
    write_jpegs(folder, n_hits * args.images_per_task, args.seed)
    call_command("import_images", str(project.pk), str(folder), stdout=io.StringIO(), stderr=io.StringIO())
    image_ids = list(Image.objects.filter(project=project).order_by("id").values_list("id", flat=True))

    key, _ = market.requester_key_create(user=owner)
    account = key.account
    account.is_public = True
    account.save(update_fields=["is_public"])
    market.account_top_up(account=account, amount=Decimal("1000000"), reference="task flow benchmark")
    hit_type = market.hit_type_get_or_create(
        account=account, title="Which kinds of objects are in these photos?",
        description="Tick every kind of object you see in each photo.", reward="0.01",
        assignment_duration=1800, auto_approval_delay=86400, keywords="image,labeling,load")
    per = args.images_per_task
    for i in range(n_hits):
        url = tools.task_create(kind="categories", project=project, images=image_ids[i * per:(i + 1) * per])
        question = ('<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
                    f'2006-07-14/ExternalQuestion.xsd"><ExternalURL>{url}</ExternalURL>'
                    '<FrameHeight>700</FrameHeight></ExternalQuestion>')
        market.hit_create(account=account, hit_type=hit_type, question=question, lifetime=86400,
                          max_assignments=args.assignments)
    invite = market.worker_invite_create(account=account, uses=args.workers)
    setup = Setup()
    setup.hit_type_id = hit_type.hit_type_id
    setup.image_ids = image_ids
    for w in range(args.workers):
        worker = market.worker_sign_up(username=f"flow-worker-{w:03d}", password="Flow-test-pass-9271",
                                       invite_code=invite.code)
        client = Client(enforce_csrf_checks=True, HTTP_HOST=HOST)
        client.force_login(worker.user)  # the first of AUTHENTICATION_BACKENDS, as signing in uses
        home = client.get("/market/")  # the marketplace's home page sets the CSRF cookie
        if home.status_code != 200:
            raise RuntimeError(f"home page answered {home.status_code}")
        setup.clients.append(client)
    return setup


# --- Measuring ------------------------------------------------------------------------------------

class Meter:
    """CPU ms, wall ms and SQL queries per request, per endpoint."""

    def __init__(self, profile: str = "") -> None:
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.queries: dict[str, list[int]] = defaultdict(list)
        self.pg_cpu: dict[str, list[float]] = defaultdict(list)
        self.profile = profile
        self.profiler = cProfile.Profile(time.process_time) if profile else None  # CPU, not wall
        self.counting = True
        self._n = 0
        self.sql: list[tuple[str, str]] = []
        self.keep_sql = False
        self._endpoint = ""

    def wrapper(self, execute, sql, params, many, context):
        self._n += 1
        if not self.keep_sql:
            return execute(sql, params, many, context)
        pid = _backend_pid()
        p0 = _run_ns(pid)
        try:
            return execute(sql, params, many, context)
        finally:
            p1 = _run_ns(pid)
            pg_ms = (p1 - p0) / 1e6 if p0 is not None and p1 is not None else None
            self.sql.append((self._endpoint, sql, pg_ms))

    def call(self, endpoint: str, fn):
        profiled = self.profiler is not None and self.counting and self.profile in (endpoint, "all")
        self._n = 0
        self._endpoint = endpoint
        if profiled:
            self.profiler.enable()
        pid = _backend_pid()
        p0 = _run_ns(pid)
        c0, t0 = time.process_time(), time.perf_counter()
        response = fn()
        if getattr(response, "streaming", False):
            b"".join(response.streaming_content)
            response.close()
        c1, t1 = time.process_time(), time.perf_counter()
        p1 = _run_ns(pid) if pid == _backend_pid() else None
        if profiled:
            self.profiler.disable()
        if self.counting:
            self.cpu[endpoint].append((c1 - c0) * 1000)
            self.wall[endpoint].append((t1 - t0) * 1000)
            self.queries[endpoint].append(self._n)
            if p0 is not None and p1 is not None:
                self.pg_cpu[endpoint].append((p1 - p0) / 1e6)
        return response

    def row(self, endpoint: str) -> dict:
        n = len(self.cpu[endpoint])
        if not n:
            return {"requests": 0}
        cpu = sorted(self.cpu[endpoint])
        pg = self.pg_cpu[endpoint]
        return {"requests": n, "cpu_ms": round(sum(cpu) / n, 3), "cpu_p50_ms": round(cpu[n // 2], 3),
                "wall_ms": round(sum(self.wall[endpoint]) / n, 3),
                "queries": round(sum(self.queries[endpoint]) / n, 2),
                "pg_cpu_ms": round(sum(pg) / len(pg), 3) if pg else None}


def _backend_pid() -> int | None:
    """The PostgreSQL server process serving this thread's connection (no query needed)."""
    from django.db import connection

    raw = connection.connection
    return getattr(getattr(raw, "info", None), "backend_pid", None) if raw is not None else None


def _run_ns(pid: int | None) -> int | None:
    """CPU time a process has run, in ns (/proc/PID/schedstat), or None when not readable."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class FlowError(RuntimeError):
    pass


def run_task(client, setup: Setup, meter: Meter) -> None:
    """The load's seven requests for one task (benchmarks/load.py, ``work_loop``)."""
    csrf = client.cookies["csrftoken"].value
    # Bodies as the load's client (aiohttp) and browsers send them: url-encoded, not multipart.
    r = meter.call("accept", lambda: client.post(f"/market/groups/{setup.hit_type_id}/accept/", "",
                                                 content_type=FORM, HTTP_X_CSRFTOKEN=csrf))
    if r.status_code != 302 or "/market/work/" not in r["Location"]:
        raise FlowError(f"accept answered {r.status_code}: {r.content[:300]!r}")
    work_url = urlsplit(r["Location"]).path
    r = meter.call("work page", lambda: client.get(work_url))
    frame = FRAME.search(r.content) if r.status_code == 200 else None
    if frame is None:
        raise FlowError(f"work page answered {r.status_code} without the task frame")
    import html

    src = urlsplit(html.unescape(frame[1].decode()))
    from urllib.parse import parse_qs

    query = {k: v[0] for k, v in parse_qs(src.query).items()}
    r = meter.call("task page", lambda: client.get(src.path, query))
    data = TASK_DATA.search(r.content) if r.status_code == 200 else None
    if data is None:
        raise FlowError(f"task page answered {r.status_code} without the task data")
    task = json.loads(data[1])
    categories = [c["id"] for g in task["supercategories"] for c in g["categories"]]
    for image in task["images"]:
        r = meter.call("image", lambda: client.get(urlsplit(image["url"]).path))
        if r.status_code != 200:
            raise FlowError(f"image answered {r.status_code}")
    answer = {"schema": task["schema"], "version": task["version"],
              "images": [{"image": i["id"], "present": categories[: (i["id"] % 3)]} for i in task["images"]]}
    host = {"assignmentId": query["assignmentId"], "workerId": query["workerId"], "hitId": query["hitId"]}
    body = json.dumps({"host": host, "answer": answer})
    r = meter.call("answer", lambda: client.post(src.path + "answer", body, content_type="application/json"))
    if r.status_code != 201:
        raise FlowError(f"answer answered {r.status_code}: {r.content[:300]!r}")
    reply = json.loads(r.content)
    form = {"assignmentId": query["assignmentId"], "answerId": str(reply["answer"]), "summary": reply["summary"]}
    r = meter.call("submit", lambda: client.post("/mturk/externalSubmit", urlencode(form), content_type=FORM))
    if r.status_code != 200 or b"your work was submitted" not in r.content:
        raise FlowError(f"submit answered {r.status_code}: {r.content[:300]!r}")


def run(args: argparse.Namespace, setup: Setup) -> tuple[Meter, dict]:
    import random

    from django.db import connection
    from django.test import Client

    meter = Meter(args.profile)
    rnd = random.Random(args.seed)
    bare = Client(HTTP_HOST=HOST)
    counts = {"tasks": 0}
    with connection.execute_wrapper(meter.wrapper):
        meter.counting = False
        for i in range(args.warmup):
            run_task(setup.clients[i % len(setup.clients)], setup, meter)
            meter.call("baseline", lambda: bare.get(f"/bench/row/{rnd.choice(setup.image_ids)}"))
        # --show-queries: every statement of the measured tasks, with PostgreSQL's CPU for each
        # (two /proc reads around each: a diagnostic run, its CPU figures a little higher).
        meter.keep_sql = bool(args.show_queries)
        meter.counting = True
        t0 = time.perf_counter()
        for i in range(args.tasks):
            client = setup.clients[(i + args.warmup + args.show_queries) % len(setup.clients)]
            run_task(client, setup, meter)
            counts["tasks"] += 1
            # As many baseline requests as the task made, interleaved, so both see the same machine.
            for _ in range(5 + args.images_per_task):
                r = meter.call("baseline", lambda: bare.get(f"/bench/row/{rnd.choice(setup.image_ids)}"))
                if r.status_code != 200:
                    raise FlowError(f"baseline answered {r.status_code}")
        counts["seconds"] = round(time.perf_counter() - t0, 2)
    return meter, counts


def check_counts(setup: Setup, tasks: int) -> dict:
    from crowd.marketplace.models import Assignment
    from frontend.models import TaskAnswer

    submitted = list(Assignment.objects.filter(status=Assignment.Status.SUBMITTED)
                     .values_list("assignment_id", flat=True))
    answers = list(TaskAnswer.objects.values_list("assignment_id", flat=True))
    return {"submitted": len(submitted), "submitted_distinct": len(set(submitted)),
            "answers": len(answers), "answers_distinct": len(set(answers)),
            "answers_without_submission": len(set(answers) - set(submitted))}


# --- Report ---------------------------------------------------------------------------------------

def table(result: dict) -> str:
    base = result["baseline"]
    lines = [f"Task flow in process: {result['tasks']} tasks by {result['workers']} workers, PostgreSQL + Redis "
             f"on loopback, DEBUG off; load average {result['load_average']}", "",
             f"{'endpoint':<14}{'requests':>9}{'CPU ms':>9}{'p50 CPU':>9}{'wall ms':>9}{'queries':>9}{'x bare':>8}{'PG CPU ms':>11}"]

    def line(name: str, r: dict) -> str:
        ratio = r["cpu_ms"] / base["cpu_ms"] if base["cpu_ms"] else 0
        return (f"{name:<14}{r['requests']:>9}{r['cpu_ms']:>9.2f}{r['cpu_p50_ms']:>9.2f}{r['wall_ms']:>9.2f}"
                f"{r['queries']:>9.2f}{ratio:>8.1f}"
                + (f"{r['pg_cpu_ms']:>11.2f}" if r.get("pg_cpu_ms") is not None else f"{'-':>11}"))

    for name in ENDPOINTS:
        lines.append(line(name, result["endpoints"][name]))
    lines.append(line("baseline row", base))
    f = result["flow"]
    lines += ["", f"one task: {f['requests_per_task']} requests, {f['cpu_ms_per_task']:.1f} ms CPU, "
                  f"{f['queries_per_task']:.0f} queries; mean per request {f['cpu_ms_per_request']:.2f} ms CPU "
                  f"against {base['cpu_ms']:.2f} for the bare view: predicted ratio {result['predicted_ratio']}",
              f"PostgreSQL's own CPU (its server process for this connection): "
              f"{f.get('pg_cpu_ms_per_task', '-')} ms per task, {base.get('pg_cpu_ms', '-')} per bare view",
              f"counts: {result['counts']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    services = Services()
    result: dict = {"benchmark": "task_flow", "tasks": args.tasks, "workers": args.workers,
                    "images_per_task": args.images_per_task, "assignments": args.assignments,
                    "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1)}
    try:
        env = services.start()
        django_setup(env)
        setup = setup_platform(args, services.dir / "photos")
        meter, counts = run(args, setup)
        result["tasks"] = counts["tasks"]
        result["seconds"] = counts["seconds"]
        result["endpoints"] = {name: meter.row(name) for name in ENDPOINTS}
        result["baseline"] = meter.row("baseline")
        per_task = {name: (args.images_per_task if name == "image" else 1) for name in ENDPOINTS}
        cpu = sum(result["endpoints"][n]["cpu_ms"] * k for n, k in per_task.items())
        queries = sum(result["endpoints"][n]["queries"] * k for n, k in per_task.items())
        n_requests = sum(per_task.values())
        result["flow"] = {"requests_per_task": n_requests, "cpu_ms_per_task": round(cpu, 2),
                          "queries_per_task": round(queries, 1), "cpu_ms_per_request": round(cpu / n_requests, 3)}
        pg = [result["endpoints"][n].get("pg_cpu_ms") for n in per_task]
        if all(v is not None for v in pg):
            result["flow"]["pg_cpu_ms_per_task"] = round(sum(v * per_task[n] for v, n in zip(pg, per_task)), 2)
        result["predicted_ratio"] = round(result["baseline"]["cpu_ms"] / (cpu / n_requests), 3)
        result["counts"] = check_counts(setup, counts["tasks"])
        result["load_average_end"] = round(os.getloadavg()[0], 1)
        if args.show_queries:
            # The SQL of the flow with PostgreSQL's CPU per statement (mean over every task).
            by_sql: dict[tuple[str, str], list[float]] = defaultdict(list)
            for endpoint, sql, pg_ms in meter.sql:
                by_sql[(endpoint, sql)].append(pg_ms if pg_ms is not None else float("nan"))
            for (endpoint, sql), times in by_sql.items():
                print(f"[{endpoint}] x{len(times)} PostgreSQL {sum(times) / len(times):.3f} ms: {sql[:400]}")
            print()
        if meter.profiler is not None:
            out = io.StringIO()
            stats = pstats.Stats(meter.profiler, stream=out)
            if args.profile_out:
                stats.dump_stats(args.profile_out)
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(30)
            print(out.getvalue())
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        services.stop()
    print(table(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
