"""Load: simulated crowd workers against the production shape, with a bare one-row view beside it.

    .venv/bin/python benchmarks/load.py                          # 200 workers for 5 minutes
    .venv/bin/python benchmarks/load.py --workers 20 --seconds 30  # what CI runs (tests/load)

The script starts, on loopback and in temporary folders, what ``docker-compose.yml`` runs:
PostgreSQL 15, Redis (broker and cache), gunicorn (gthread), a Celery worker and Celery beat,
configured only by environment variables (the starters of ``tests/services.py``). Media stay on
the local disk and are served by Django, as with ``SERVE_MEDIA``. Then, in order:

1. **Setup** (not measured as load): small generated JPEGs imported with ``import_images`` into a
   project with a few categories; a requester key and the project's crowd credentials; a
   category-labeling stage planned and published into our marketplace through the crowd layer
   (boto3 over HTTP); workers signing up at ``/market/`` with one invitation link.
2. **Baseline**: as many concurrent loops as workers, each fetching ``/bench/row/<pk>``
   (``annotator/benchviews.py``: one row read by primary key from the same database, served by
   the same gunicorn) as fast as answers come back.
3. **Load**: every worker loops, each step waiting for the previous answer: take a task
   (``POST /market/groups/<type>/accept/``), open the work page, load the task page the
   marketplace frames and each image it names, post the answer JSON to the task's answer URL,
   then post the form to ``/mturk/externalSubmit``. Meanwhile beat runs the requester's sync
   (``crowd.sync_all`` and ``crowd.answers_collect`` every ``--sync-seconds``) on the Celery
   worker, and a researcher asks the REST API for an export and follows it to the end.
4. **Counting**: the HITs that were worked on are expired and the stage synced until nothing is
   left to review; then the answers the client saw accepted (its own log) are compared with the
   database: ``TaskAnswer`` rows, the marketplace's submitted assignments, the crowd layer's
   ``Assignment`` rows and reward payments. None may be missing, none may be there twice.

The simulated workers are one asyncio process (aiohttp): each worker is one session with its own
cookies and at most two connections, and the client refuses any address but 127.0.0.1. By
default each worker spends 10 to 30 s labeling a task (``--think 20``; COCO's category labeling
took about 20k worker hours for 8 workers on 300k images, about 30 s per image, so a task of two
images in 20 s presses harder than that crowd did) and the workers arrive at random moments over the first 20 s
(``--ramp``), so the load starts in its steady state; the latencies of the load are taken there.
Then (**capacity**, ``--capacity-seconds``, 60 s) the same workers loop without any pause, which
presses the server as far as it goes: the throughput against the baseline is taken there. With
``--think 0`` the load itself runs without a pause and gives both.

"""
from __future__ import annotations

import argparse
import asyncio
import html
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENDPOINTS = ("accept", "work page", "task page", "image", "answer", "submit")
GOAL_ENDPOINTS = ("accept", "answer", "submit")  # taking and submitting a task
GOAL_P99_MS = 250.0
GOAL_RATIO = 0.5
WORKER_PASSWORD = "Load-test-pass-9271"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=200, help="concurrent simulated workers (default 200)")
    p.add_argument("--seconds", type=float, default=300, help="length of the load phase (default 300)")
    p.add_argument("--baseline-seconds", type=float, default=None,
                   help="length of the baseline phase (default: the load's, at most 30)")
    p.add_argument("--gunicorn-workers", type=int, default=2, help="gunicorn processes (default 2, as compose)")
    p.add_argument("--gunicorn-threads", type=int, default=4, help="threads per gunicorn process (default 4)")
    p.add_argument("--celery-concurrency", type=int, default=2, help="Celery worker processes (default 2)")
    p.add_argument("--hits", type=int, default=None,
                   help="HITs to publish (default: 10 per second of load, so the pool outlasts the run)")
    p.add_argument("--assignments", type=int, default=10, help="MaxAssignments per HIT (default 10)")
    p.add_argument("--images-per-task", type=int, default=2, help="images in each labeling task (default 2)")
    p.add_argument("--think", type=float, default=20.0,
                   help="seconds a worker spends labeling, between loading a task and answering, drawn from "
                        "0.5 to 1.5 times this (default 20; 0: no pause)")
    p.add_argument("--ramp", type=float, default=None,
                   help="seconds over which the workers arrive, each at a random moment (default: --think, so "
                        "the run starts in its steady state; 0: all at once)")
    p.add_argument("--capacity-seconds", type=float, default=None,
                   help="after the load, the same workers loop without pause for this long to measure the "
                        "throughput against the baseline (default 60 with --think, else 0: the load itself)")
    p.add_argument("--sync-seconds", type=float, default=15, help="beat's crowd sync interval (default 15)")
    p.add_argument("--export-at", type=float, default=None,
                   help="seconds into the load when the export is asked for (default: a third of the way)")
    p.add_argument("--signup-concurrency", type=int, default=4, help="workers signing up at once (default 4)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, client log)")
    p.add_argument("--py-spy", metavar="DIR", default=None,
                   help="sample the web tier's Python stacks (threads holding the GIL: its CPU in Python) with py-spy (not in requirements: pip install "
                        "py-spy) during the baseline and the capacity phase (or the load with --think 0), "
                        "writing collapsed stacks to DIR/<phase>.txt for flame graphs")
    args = p.parse_args(argv)
    if args.workers < 1 or args.seconds <= 0:
        p.error("--workers and --seconds must be positive")
    if args.baseline_seconds is None:
        args.baseline_seconds = min(30.0, args.seconds)
    if args.ramp is None:
        args.ramp = args.think
    if args.capacity_seconds is None:
        args.capacity_seconds = 60.0 if args.think else 0.0
    if args.think < 0 or args.ramp < 0 or args.capacity_seconds < 0:
        p.error("--think, --ramp and --capacity-seconds cannot be negative")
    if args.hits is None:
        # A worker takes each HIT once: enough for one worker at 12 tasks/s, or all at 120.
        args.hits = max(20, math.ceil(12 * (args.seconds + args.capacity_seconds)))
    if args.export_at is None:
        args.export_at = args.seconds / 3
    return args


# --- The stack ---------------------------------------------------------------------------------

class Stack:
    """PostgreSQL, Redis, gunicorn, a Celery worker and beat, configured only by variables."""

    def __init__(self, args: argparse.Namespace) -> None:
        from tests.services import PostgresServer, RedisServer, free_port

        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="annotator-load-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.pg = PostgresServer()
        self.redis = RedisServer()
        self.procs: dict[str, subprocess.Popen] = {}
        self.celery = None
        self.env: dict[str, str] = {}

    def start_services(self) -> None:
        import psycopg

        self.pg.start()
        self.redis.start()
        with psycopg.connect(f"host=127.0.0.1 port={self.pg.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE annotator")
        keep = {k: v for k, v in os.environ.items()
                if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE", "SERVE_MEDIA", "DJANGO_SETTINGS_MODULE")}
        self.env = {
            **keep,
            # What docker-compose.yml sets ...
            "DEBUG": "false", "SECRET_KEY": "load-benchmark-" + "k" * 50,
            "DATABASE_URL": self.pg.url, "CELERY_BROKER_URL": self.redis.url,
            "CACHE_URL": self.redis.url.replace("/0", "/1"),
            "ALLOWED_HOSTS": "127.0.0.1,localhost", "ANNOTATOR_VAR_DIR": str(self.dir / "var"),
            "PUBLIC_BASE_URL": self.base,
            # ... then what plain HTTP on loopback needs (production sits behind TLS) ...
            "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false",
            "MARKETPLACE_ALLOW_HTTP_LOOPBACK": "true", "CROWD_ALLOW_HTTP_LOOPBACK": "true",
            # ... one requester key publishes thousands of HITs and syncs them: no API rate limit;
            # every simulated worker comes from 127.0.0.1 and works without pause: no per-address
            # or per-worker limit on signing in and submitting (tests/security checks the limits).
            "MARKETPLACE_API_RATE": "100000", "MARKETPLACE_API_BURST": "100000",
            "RATELIMIT_LOGIN_IP": "1000000/m", "RATELIMIT_LOGIN_USER": "1000000/m",
            "RATELIMIT_SUBMIT_IP": "1000000/m", "RATELIMIT_SUBMIT_WORKER": "1000000/m",
            "API_THROTTLE_USER": "100000/min",
            "CROWD_SYNC_SECONDS": str(self.args.sync_seconds),
            "BENCHMARK_VIEWS": "true", "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "annotator.settings",
        }

    def start_processes(self) -> None:
        from tests.services import CeleryWorker, wait_for_port

        bin_dir = Path(sys.executable).parent
        a = self.args
        commands = {
            "web": [str(bin_dir / "gunicorn"), "annotator.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
                    "--workers", str(a.gunicorn_workers), "--threads", str(a.gunicorn_threads),
                    "--worker-class", "gthread", "--timeout", "120", "--backlog", "2048"],
            "beat": [sys.executable, "-m", "celery", "-A", "annotator", "beat", "--loglevel=INFO",
                     "-s", str(self.dir / "beat-schedule")],
        }
        for name, cmd in commands.items():
            with (self.dir / f"{name}.log").open("wb") as log:
                self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.celery = CeleryWorker(self.env, concurrency=a.celery_concurrency).start()
        wait_for_port(self.port, timeout=60, proc=self.procs["web"], log=self.dir / "web.log")

    def alive(self) -> dict[str, bool]:
        out = {name: proc.poll() is None for name, proc in self.procs.items()}
        out["worker"] = bool(self.celery and self.celery.proc and self.celery.proc.poll() is None)
        return out

    def stop(self) -> None:
        from tests.services import stop_groups

        stop_groups(self.procs.values())
        if self.celery:
            self.celery.stop()
        self.redis.stop()
        self.pg.stop()

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# --- Where the CPU goes ---------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, tuple[int, int, int, float, float, float]]:
    """pid -> (ppid, session, pid, own CPU seconds, reaped children's CPU seconds, own CPU
    seconds in the kernel), from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        f = raw.rsplit(")", 1)[1].split()
        out[int(entry)] = (int(f[1]), int(f[3]), int(entry), (int(f[11]) + int(f[12])) / TICK,
                           (int(f[13]) + int(f[14])) / TICK, int(f[12]) / TICK)
    return out


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each part: web, Celery worker, beat, PostgreSQL, Redis, this
    client, and the whole machine (busy and total), to tell our share from everything else's."""
    stats = _proc_stats()
    sessions = {name: proc.pid for name, proc in stack.procs.items()}
    if stack.celery and stack.celery.proc:
        sessions["celery worker"] = stack.celery.proc.pid
    out: dict[str, float] = {}
    for name, sid in sessions.items():
        out[name] = sum(own + reaped * (pid == sid) for ppid, session, pid, own, reaped, _ in stats.values()
                        if session == sid)
    # Of the web tier's CPU, the part spent in the kernel (sockets, waking threads): shown apart,
    # not added to the total.
    web = sessions.get("web")
    out["web in kernel"] = sum(kernel for _, session, _, _, _, kernel in stats.values() if session == web)
    try:
        master = int((stack.pg.data / "postmaster.pid").read_text().split()[0])
        out["postgres"] = sum(own + reaped * (pid == master) for ppid, _, pid, own, reaped, _ in stats.values()
                              if pid == master or ppid == master)
    except (OSError, ValueError):
        pass
    if stack.redis.proc:
        out["redis"] = sum(v[3] for pid, v in stats.items() if pid == stack.redis.proc.pid)
    t = os.times()
    out["client"] = t.user + t.system
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    out["machine total"] = sum(cpu) / TICK
    out["machine busy"] = (sum(cpu) - cpu[3] - cpu[4]) / TICK  # all but idle and iowait
    return out


def cpu_used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used on average by each part over a phase; 'others' is what the rest of the machine used."""
    used = {k: (after[k] - before.get(k, 0.0)) / seconds for k in after if k not in ("machine total", "machine busy")}
    busy = (after["machine busy"] - before["machine busy"]) / seconds
    used["others"] = max(0.0, busy - sum(v for k, v in used.items() if k != "web in kernel"))
    used["machine busy"] = busy
    return {k: round(v, 2) for k, v in used.items()}


class PgActivity:
    """Samples what PostgreSQL's backends are doing: running, or waiting for a row lock."""

    def __init__(self, port: int) -> None:
        import psycopg

        self.conn = psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=annotator", autocommit=True)
        self.samples: list[tuple[int, int]] = []
        self.waiting: Counter[str] = Counter()  # the statements seen waiting for a lock

    def sample(self) -> None:
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE wait_event_type = 'Lock') "
            "FROM pg_stat_activity WHERE datname = 'annotator' AND pid <> pg_backend_pid()").fetchone()
        self.samples.append((row[0], row[1]))
        if row[1]:
            for (query,) in self.conn.execute(
                    "SELECT right(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_activity "
                    "WHERE datname = 'annotator' AND wait_event_type = 'Lock'").fetchall():
                self.waiting[re.sub(r"\d+", "N", query)] += 1

    def summary(self) -> dict:
        n = max(1, len(self.samples))
        return {"samples": len(self.samples),
                "active_mean": round(sum(a for a, _ in self.samples) / n, 2),
                "lock_waiting_mean": round(sum(w for _, w in self.samples) / n, 2),
                "lock_waiting_max": max((w for _, w in self.samples), default=0),
                "waiting_statements": dict(self.waiting.most_common(5))}

    def close(self) -> None:
        self.conn.close()


async def sample_every(activity: PgActivity, seconds: float, deadline: float) -> None:
    while time.monotonic() < deadline:
        await asyncio.to_thread(activity.sample)
        await asyncio.sleep(seconds)


# --- Setup, in this process through the platform's own services ---------------------------------

def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def write_jpegs(folder: Path, count: int, seed: int) -> None:
    """Small photo-like JPEGs (a gradient and a few shapes), each different, about 2 KB."""
    from PIL import Image, ImageDraw

    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = rnd.choice([(96, 72), (80, 60), (72, 96)])
        img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rnd.randrange(w - 10), rnd.randrange(h - 10)
            draw.rectangle([x0, y0, x0 + rnd.randrange(5, 30), y0 + rnd.randrange(5, 30)],
                           fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
        draw.text((2, 2), str(i), fill=(255, 255, 255))
        img.save(folder / f"photo-{i:06d}.jpg", quality=85)


@dataclass
class Setup:
    project_id: int
    stage_id: int
    hit_type_id: str
    invite_code: str
    api_token: str
    image_ids: list[int]
    hits_published: int
    seconds: dict[str, float] = field(default_factory=dict)


def setup_platform(stack: Stack, args: argparse.Namespace) -> Setup:
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from crowd import services as crowd
    from crowd.models import HIT, CrowdStage
    from datasets.models import Category, Image, Project
    from datasets.services.tokens import api_token_create

    seconds = {}
    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    seconds["migrate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stack.start_processes()  # publishing below goes through the web server, as boto3 reaches it
    seconds["processes"] = time.perf_counter() - t0

    owner = get_user_model().objects.create_user("load-owner", password=None)
    project = Project.objects.create(name="Load benchmark", owner=owner, budget_usd=Decimal("1000000"))
    for coco_id, name, sup in [(1, "person", "person"), (3, "car", "vehicle"), (18, "dog", "animal"),
                               (47, "cup", "kitchen"), (62, "chair", "furniture")]:
        Category.objects.create(project=project, coco_id=coco_id, name=name, supercategory=sup)

    t0 = time.perf_counter()
    n_images = args.hits * args.images_per_task
    folder = stack.dir / "photos"
    write_jpegs(folder, n_images, args.seed)
    call_command("import_images", str(project.pk), str(folder), stdout=io.StringIO(), stderr=io.StringIO())
    image_ids = list(Image.objects.filter(project=project).order_by("id").values_list("id", flat=True))
    if len(image_ids) != n_images:
        raise RuntimeError(f"imported {len(image_ids)} of {n_images} generated images")
    seconds["images"] = time.perf_counter() - t0

    out = io.StringIO()
    call_command("create_requester_key", owner.username, "--balance", "1000000", "--public", stdout=out)
    key = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", out.getvalue())[1]
    secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", out.getvalue())[1]
    crowd.credentials_set(project=project, access_key_id=key, secret_access_key=secret,
                          endpoint_url=stack.base + "/mturk-api/")
    invite = call_command_out("create_worker_invite", owner.username, "--uses", str(args.workers))
    invite_code = invite.strip().rstrip("/").split("/")[-1]
    token = api_token_create(user=owner, name="load benchmark")[1]

    stage = CrowdStage.objects.create(
        project=project, name="Load: which objects?", kind="categories",
        title="Which kinds of objects are in these photos?",
        description="Tick every kind of object you see in each photo.", keywords="image,labeling,load",
        reward=Decimal("0.01"), max_assignments=args.assignments, items_per_hit=args.images_per_task,
        lifetime_s=86400, assignment_duration_s=1800, auto_approval_delay_s=86400,
        min_approval_rate=None, min_approved_hits=None, locales=[],
        in_pipeline=True, aggregation="majority")  # answers are aggregated by Celery as they arrive
    from crowd.pipeline import engine

    engine.items_add(stage=stage, specs=engine.entry_specs(stage))
    t0 = time.perf_counter()
    plan = crowd.stage_plan(stage_id=stage.pk)
    if len(plan.created) != args.hits:
        raise RuntimeError(f"planned {len(plan.created)} HITs of {args.hits}")
    publish_all(plan.created)
    engine.items_link(stage=stage)
    seconds["publish"] = time.perf_counter() - t0
    stage.refresh_from_db()
    published = HIT.objects.filter(stage=stage, status=HIT.Status.PUBLISHED).count()
    if published != args.hits:
        raise RuntimeError(f"published {published} HITs of {args.hits}")
    return Setup(project_id=project.pk, stage_id=stage.pk, hit_type_id=stage.hit_type_id, invite_code=invite_code,
                 api_token=token, image_ids=image_ids, hits_published=published, seconds=seconds)


def call_command_out(*args: str) -> str:
    from django.core.management import call_command

    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def publish_all(hit_ids: list[int], threads: int = 8) -> None:
    """CreateHITWithHITType for each planned HIT through the crowd layer, a few at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from crowd import services as crowd

    def one(chunk: list[int]) -> None:
        try:
            for pk in chunk:
                crowd.hit_publish(hit_id=pk)
        finally:
            connection.close()

    chunks = [hit_ids[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(one, c) for c in chunks]:
            f.result()


# --- The client ---------------------------------------------------------------------------------

def page_text(body: bytes) -> str:
    """The title and first paragraph of an HTML answer (or the start of any other), for error lines."""
    text = body.decode(errors="replace")
    found = [re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", text, re.S) for tag in ("title", "p")]
    parts = [html.unescape(re.sub(r"<[^>]+>", "", m[1])).strip() for m in found if m]
    return " - ".join(p for p in parts if p) or text[:200]


class Recorder:
    """Latencies in ms and errors per endpoint, for one phase."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.examples: list[str] = []
        self.started = self.ended = 0.0

    def ok(self, endpoint: str, ms: float) -> None:
        self.ms[endpoint].append(ms)

    def error(self, endpoint: str, ms: float | None, what: str) -> None:
        if ms is not None:
            self.ms[endpoint].append(ms)
        self.errors[endpoint] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{endpoint}: {what}"[:300])

    @property
    def seconds(self) -> float:
        return max(self.ended - self.started, 1e-9)

    def summary(self, endpoints: tuple[str, ...] | None = None) -> dict:
        names = endpoints or tuple(sorted(self.ms))
        rows = {}
        for name in names:
            values = sorted(self.ms.get(name, []))
            n = len(values)
            rows[name] = {
                "requests": n, "errors": self.errors.get(name, 0), "rps": round(n / self.seconds, 1),
                "p50_ms": pct(values, 50), "p95_ms": pct(values, 95), "p99_ms": pct(values, 99),
                "max_ms": round(values[-1], 1) if values else None,
            }
        total = sum(r["requests"] for r in rows.values())
        errors = sum(self.errors.values())
        return {"seconds": round(self.seconds, 2), "requests": total, "errors": errors,
                "error_rate": round(errors / total, 6) if total else 0.0,
                "rps": round(total / self.seconds, 1), "endpoints": rows, "error_examples": self.examples}


def pct(sorted_values: list[float], q: float) -> float | None:
    """The q-th percentile, nearest rank."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 1)


class LoopbackOnly(Exception):
    pass


def check_loopback(base: str) -> None:
    if urlsplit(base).hostname != "127.0.0.1":
        raise LoopbackOnly(f"the load client only talks to 127.0.0.1, not {base}")


async def timed(session, method: str, url: str, **kw) -> tuple[int, dict, bytes, float]:
    check_loopback(url)
    t0 = time.perf_counter()
    async with session.request(method, url, **kw) as response:
        body = await response.read()
        return response.status, dict(response.headers), body, (time.perf_counter() - t0) * 1000


def new_session(aiohttp, *, connections: int = 2):
    # unsafe=True: keep cookies for an IP address host. Idle connections are dropped after 1 s,
    # before gunicorn's keep-alive (2 s) closes them under a request.
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=1.0),
        timeout=aiohttp.ClientTimeout(total=120))


def csrf_headers(session, base: str) -> dict[str, str]:
    from yarl import URL

    cookie = session.cookie_jar.filter_cookies(URL(base)).get("csrftoken")
    return {"X-CSRFToken": cookie.value if cookie else "", "Referer": base + "/market/"}


@dataclass
class SimWorker:
    username: str
    session: object
    worker_id: str = ""


async def sign_up(aiohttp, base: str, code: str, username: str) -> SimWorker:
    """An invitation link, the sign-up form, then the marketplace's home page."""
    session = new_session(aiohttp)
    w = SimWorker(username, session)
    status, _, body, _ = await timed(session, "GET", f"{base}/market/join/{code}/")
    if status != 200:
        raise RuntimeError(f"join page answered {status}: {body[:200]!r}")
    form = {"username": username, "email": "", "country": "US", "password1": WORKER_PASSWORD,
            "password2": WORKER_PASSWORD, "invite_code": code}
    headers = csrf_headers(session, base)
    form["csrfmiddlewaretoken"] = headers["X-CSRFToken"]
    status, head, body, _ = await timed(session, "POST", f"{base}/market/signup/", data=form, headers=headers,
                                        allow_redirects=False)
    if status != 302:
        raise RuntimeError(f"sign-up of {username} answered {status}: {body[:300]!r}")
    status, _, body, _ = await timed(session, "GET", f"{base}/market/")
    found = re.search(rb"Your worker ID is <code>(A[A-Z0-9]{13})</code>", body)
    if status != 200 or not found:
        raise RuntimeError(f"home page after sign-up answered {status} without a worker id")
    w.worker_id = found[1].decode()
    return w


@dataclass
class ClientLog:
    """What the client saw, one entry per task it took: the log the database is counted against."""

    entries: list[dict] = field(default_factory=list)
    pool_empty: int = 0

    def submitted(self) -> list[str]:
        return [e["assignment"] for e in self.entries if e.get("submitted")]

    def answered(self) -> list[str]:
        return [e["assignment"] for e in self.entries if e.get("answer_id")]


TASK_DATA = re.compile(rb'<script id="task-data" type="application/json">(.*?)</script>', re.S)
FRAME = re.compile(rb'<iframe class="task" src="([^"]+)"')


async def work_loop(w: SimWorker, base: str, hit_type_id: str, deadline: float, rec: Recorder, log: ClientLog,
                    rnd: random.Random, think: float = 0.0, ramp: float = 0.0) -> None:
    """Take a task, load it and its images, answer, submit; again until the deadline.

    With ``ramp`` the worker first arrives at a random moment within that many seconds; with
    ``think`` it spends 0.5 to 1.5 times that labeling each task before answering.
    """
    s = w.session
    if ramp:
        await asyncio.sleep(min(rnd.uniform(0, ramp), max(0.0, deadline - time.monotonic())))
    while time.monotonic() < deadline:
        entry: dict = {"worker": w.worker_id}
        step = "accept"
        try:
            status, head, body, ms = await timed(s, "POST", f"{base}/market/groups/{hit_type_id}/accept/",
                                                 headers=csrf_headers(s, base), allow_redirects=False)
            location = head.get("Location", "")
            if status != 302 or "/market/work/" not in location:
                if status == 409 and b"no more HITs" in body:
                    log.pool_empty += 1
                rec.error(step, ms, f"{status} {page_text(body)}")
                await asyncio.sleep(1.0)
                continue
            rec.ok(step, ms)
            work_url = location if location.startswith("http") else base + location
            entry["assignment"] = work_url.rstrip("/").split("/")[-1]
            log.entries.append(entry)

            step = "work page"
            status, _, body, ms = await timed(s, "GET", work_url)
            frame = FRAME.search(body) if status == 200 else None
            if frame is None:
                rec.error(step, ms, f"{status} without the task frame")
                continue
            rec.ok(step, ms)
            src = html.unescape(frame[1].decode())
            query = {k: v[0] for k, v in parse_qs(urlsplit(src).query).items()}
            entry["hit"] = query.get("hitId", "")

            step = "task page"
            status, _, body, ms = await timed(s, "GET", src)
            data = TASK_DATA.search(body) if status == 200 else None
            if data is None:
                rec.error(step, ms, f"{status} without the task data")
                continue
            rec.ok(step, ms)
            task = json.loads(data[1])
            categories = [c["id"] for g in task["supercategories"] for c in g["categories"]]

            step = "image"
            for image in task["images"]:
                url = image["url"] if image["url"].startswith("http") else base + image["url"]
                status, _, body, ms = await timed(s, "GET", url)
                if status != 200 or not body.startswith(b"\xff\xd8"):
                    raise StepFailed(f"{status}, {len(body)} bytes for {image['url']}")
                rec.ok(step, ms)

            if think:
                await asyncio.sleep(rnd.uniform(0.5 * think, 1.5 * think))
            step = "answer"
            answer = {"schema": task["schema"], "version": task["version"],
                      "images": [{"image": i["id"], "present": rnd.sample(categories, rnd.randint(0, 2))}
                                 for i in task["images"]]}
            host = {"assignmentId": query["assignmentId"], "workerId": query["workerId"], "hitId": query["hitId"]}
            answer_url = urlsplit(src)._replace(query="").geturl() + "answer"
            status, _, body, ms = await timed(s, "POST", answer_url, json={"host": host, "answer": answer})
            if status != 201:
                rec.error(step, ms, f"{status} {body[:200]!r}")
                continue
            rec.ok(step, ms)
            reply = json.loads(body)
            entry["answer_id"] = reply["answer"]

            step = "submit"
            form = {"assignmentId": query["assignmentId"], "answerId": str(reply["answer"]),
                    "summary": reply.get("summary", "")}
            status, _, body, ms = await timed(s, "POST", query["turkSubmitTo"] + "/mturk/externalSubmit", data=form)
            if status != 200 or b"your work was submitted" not in body:
                rec.error(step, ms, f"{status} {page_text(body)}")
                continue
            rec.ok(step, ms)
            entry["submitted"] = True
        except StepFailed as exc:
            rec.error(step, None, str(exc))
        except (asyncio.TimeoutError, OSError, ValueError, KeyError) as exc:
            rec.error(step, None, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # aiohttp's ClientError and the like: counted, never fatal
            rec.error(step, None, f"{type(exc).__name__}: {exc}")


class StepFailed(Exception):
    pass


async def baseline_loop(session, base: str, ids: list[int], deadline: float, rec: Recorder,
                        rnd: random.Random) -> None:
    while time.monotonic() < deadline:
        try:
            status, _, body, ms = await timed(session, "GET", f"{base}/bench/row/{rnd.choice(ids)}")
            if status == 200 and body.startswith(b'{"id"'):
                rec.ok("baseline row", ms)
            else:
                rec.error("baseline row", ms, f"{status} {body[:100]!r}")
        except Exception as exc:
            rec.error("baseline row", None, f"{type(exc).__name__}: {exc}")


async def export_follow(aiohttp, base: str, project_id: int, token: str, start_at: float, out: dict) -> None:
    """A researcher asks for an export during the load and follows it until it is finished."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    auth = {"Authorization": f"Token {token}"}
    async with new_session(aiohttp) as s:
        t0 = time.monotonic()
        status, _, body, ms = await timed(s, "POST", f"{base}/api/v1/projects/{project_id}/exports/",
                                          json={"formats": ["coco", "shards"]}, headers=auth)
        out.update(create_status=status, create_ms=round(ms, 1))
        if status not in (200, 201, 202):
            out["error"] = body[:300].decode(errors="replace")
            return
        number = json.loads(body)["number"]
        out["number"] = number
        while time.monotonic() - t0 < 900:
            await asyncio.sleep(1.0)
            status, _, body, _ = await timed(s, "GET", f"{base}/api/v1/projects/{project_id}/exports/{number}/",
                                             headers=auth)
            if status != 200:
                out["error"] = f"{status} {body[:200]!r}"
                return
            state = json.loads(body)
            if state["status"] in ("done", "failed", "cancelled"):
                splits = (state.get("counts") or {}).values()
                out.update(status=state["status"], seconds=round(time.monotonic() - t0, 1),
                           images=sum(v.get("images", 0) for v in splits if isinstance(v, dict)),
                           files=len(state.get("files") or []), error=state.get("error", ""))
                return
        out["error"] = "not finished after 900 s"


def py_spy(stack: "Stack", out_dir: str | None):
    """A function that samples gunicorn's processes for one phase with py-spy, or does nothing."""
    if not out_dir:
        return lambda phase, seconds: None
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not exe:
        raise SystemExit("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    def start(phase: str, seconds: float):
        target = Path(out_dir) / f"{phase}.txt"
        return subprocess.Popen([exe, "record", "--pid", str(stack.procs["web"].pid), "--subprocesses",
                                 "--rate", "200", "--format", "raw", "--duration", str(max(1, int(seconds))),
                                 "--nonblocking", "--gil", "--output", str(target)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return start


async def client_run(base: str, setup: Setup, args: argparse.Namespace, snapshot, activity: PgActivity,
                     profile=lambda phase, seconds: None) -> dict:
    import aiohttp

    check_loopback(base)
    rnd = random.Random(args.seed)
    result: dict = {}

    # Sign-up (setup, not load).
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(args.signup_concurrency)

    async def one(i: int) -> SimWorker:
        async with gate:
            return await sign_up(aiohttp, base, setup.invite_code, f"load-worker-{i:04d}")

    workers = await asyncio.gather(*(one(i) for i in range(args.workers)))
    result["signup_seconds"] = round(time.perf_counter() - t0, 1)

    # Baseline: the same number of concurrent loops on the bare view.
    base_rec = Recorder()
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.workers, keepalive_timeout=1.0),
            timeout=aiohttp.ClientTimeout(total=120)) as session:
        cpu0 = snapshot()
        base_rec.started = time.monotonic()
        deadline = base_rec.started + args.baseline_seconds
        profile("baseline", args.baseline_seconds)
        await asyncio.gather(*(baseline_loop(session, base, setup.image_ids, deadline, base_rec,
                                             random.Random(args.seed + i)) for i in range(args.workers)))
        base_rec.ended = time.monotonic()
        result["baseline_cpu_cores"] = cpu_used(cpu0, snapshot(), base_rec.seconds)
    result["baseline"] = base_rec.summary(("baseline row",))

    # Load.
    rec, log, export = Recorder(), ClientLog(), {}
    cpu0 = snapshot()
    rec.started = time.monotonic()
    deadline = rec.started + args.seconds
    if not args.capacity_seconds:
        profile("load", args.seconds)
    exporter = asyncio.create_task(export_follow(aiohttp, base, setup.project_id, setup.api_token,
                                                 rec.started + args.export_at, export))
    sampler = asyncio.create_task(sample_every(activity, 0.5, deadline))
    await asyncio.gather(*(work_loop(w, base, setup.hit_type_id, deadline, rec, log,
                                     random.Random(rnd.random()), args.think, args.ramp) for w in workers))
    rec.ended = time.monotonic()
    result["load_cpu_cores"] = cpu_used(cpu0, snapshot(), rec.seconds)
    await sampler
    result["load_postgres_backends"] = activity.summary()

    # Capacity: the same workers without a pause, for the throughput against the baseline.
    if args.capacity_seconds:
        cap = Recorder()
        cpu0 = snapshot()
        cap.started = time.monotonic()
        deadline = cap.started + args.capacity_seconds
        profile("capacity", args.capacity_seconds)
        await asyncio.gather(*(work_loop(w, base, setup.hit_type_id, deadline, cap, log,
                                         random.Random(rnd.random())) for w in workers))
        cap.ended = time.monotonic()
        result["capacity_cpu_cores"] = cpu_used(cpu0, snapshot(), cap.seconds)
        result["capacity"] = cap.summary(ENDPOINTS)
    await exporter
    for w in workers:
        await w.session.close()
    result["load"] = rec.summary(ENDPOINTS)
    result["export"] = export
    result["log"] = log
    return result


# --- Counting -----------------------------------------------------------------------------------

def drain(setup: Setup, log: ClientLog, timeout: float = 600) -> dict:
    """Expire the HITs that were worked on, then sync the stage until nothing is left to review."""
    from crowd import services as crowd
    from crowd.models import HIT, Assignment

    touched = {e["hit"] for e in log.entries if e.get("hit")}
    before = Assignment.objects.filter(hit__stage_id=setup.stage_id).count()
    t0 = time.perf_counter()
    for pk in HIT.objects.filter(stage_id=setup.stage_id, provider_hit_id__in=touched,
                                 status__in=[HIT.Status.PUBLISHED, HIT.Status.REVIEWABLE]).values_list("pk", flat=True):
        crowd.hit_expire(hit_id=pk)
    passes = 0
    while time.perf_counter() - t0 < timeout:
        passes += 1
        crowd.stage_sync(stage_id=setup.stage_id)
        left = HIT.objects.filter(stage_id=setup.stage_id, provider_hit_id__in=touched).exclude(
            status=HIT.Status.DISPOSED).count()
        if not left:
            break
        time.sleep(2)
    return {"recorded_by_beat_during_load": before, "final_sync_passes": passes,
            "final_sync_seconds": round(time.perf_counter() - t0, 1),
            "touched_hits_not_disposed": HIT.objects.filter(stage_id=setup.stage_id, provider_hit_id__in=touched)
            .exclude(status=HIT.Status.DISPOSED).count()}


def count(setup: Setup, log: ClientLog) -> dict:
    from django.db.models import Count

    from crowd.marketplace.models import Assignment as MarketAssignment
    from crowd.models import Assignment, Payment
    from frontend.models import TaskAnswer

    client = log.submitted()
    client_set = set(client)

    def compare(ids: list[str]) -> dict:
        ids_set = set(ids)
        return {"rows": len(ids), "distinct": len(ids_set), "doubled": len(ids) - len(ids_set),
                "lost": len(client_set - ids_set), "not_in_client_log": len(ids_set - client_set)}

    answers = list(TaskAnswer.objects.filter(task__project_id=setup.project_id).values_list("assignment_id", flat=True))
    submitted = list(MarketAssignment.objects.filter(
        hit__hit_type__hit_type_id=setup.hit_type_id,
        status__in=[MarketAssignment.Status.SUBMITTED, MarketAssignment.Status.APPROVED,
                    MarketAssignment.Status.REJECTED]).values_list("assignment_id", flat=True))
    market_states = dict(MarketAssignment.objects.filter(hit__hit_type__hit_type_id=setup.hit_type_id)
                         .values_list("status").annotate(n=Count("id")))
    crowd_rows = list(Assignment.objects.filter(hit__stage_id=setup.stage_id)
                      .values_list("provider_assignment_id", flat=True))
    crowd_states = dict(Assignment.objects.filter(hit__stage_id=setup.stage_id)
                        .values_list("state").annotate(n=Count("id")))
    crowd_unattached = Assignment.objects.filter(hit__isnull=True).count()
    rewards = list(Payment.objects.filter(project_id=setup.project_id, kind=Payment.Kind.REWARD)
                   .values_list("assignment__provider_assignment_id", flat=True))
    return {
        "pipeline": pipeline_count(setup),
        "client_tasks_taken": len(log.entries), "client_answers_stored": len(log.answered()),
        "client_submitted": len(client), "client_submitted_distinct": len(client_set),
        "task_answers": compare(answers),
        "marketplace_submitted": compare(submitted), "marketplace_states": market_states,
        "crowd_assignments": compare(crowd_rows), "crowd_states": crowd_states,
        "crowd_unattached": crowd_unattached,
        "reward_payments": compare(rewards),
        "pool_empty_answers": log.pool_empty,
    }


def pipeline_count(setup: Setup) -> dict:
    """The aggregation that ran under load: after beat's catch-up, every item whose HIT got answers
    is decided once, on exactly the answers its HIT holds, with one aggregated label per category."""
    from django.db.models import Count

    from crowd.models import PipelineItem
    from crowd.pipeline import engine
    from datasets.models import Category, ImageLabel, Stage
    from frontend.models import TaskAnswer

    for _ in range(50):  # what beat does after the HITs ended, a batch of items per run
        if not engine.pipeline_catch_up(project_id=setup.project_id)["finished"]:
            break
    n_categories = Category.objects.filter(project_id=setup.project_id).count()
    items = list(PipelineItem.objects.filter(stage_id=setup.stage_id).select_related("hit"))
    answers = dict(TaskAnswer.objects.filter(task__project_id=setup.project_id).values_list("task_id")
                   .annotate(n=Count("id")))
    labels = dict(ImageLabel.objects.filter(image__project_id=setup.project_id, stage=Stage.AGGREGATE)
                  .values_list("image_id").annotate(n=Count("id")))
    decided = [i for i in items if i.state == PipelineItem.State.DONE]
    answered = [i for i in items if i.hit and answers.get(i.hit.task_ref)]
    return {
        "items": len(items), "answered": len(answered), "decided": len(decided),
        "undecided_with_answers": sum(1 for i in answered if i.state != PipelineItem.State.DONE),
        "wrong_answer_count": sum(1 for i in decided if i.answers != answers.get(i.hit.task_ref, 0)),
        "labels_doubled": sum(max(0, labels.get(i.image_id, 0) - n_categories) for i in decided),
        "labels_missing": sum(1 for i in decided if labels.get(i.image_id, 0) < n_categories),
    }


def verdict(result: dict) -> dict:
    c = result["counts"]
    tables = ("task_answers", "marketplace_submitted", "crowd_assignments", "reward_payments")
    lost = sum(c[t]["lost"] for t in tables)
    doubled = sum(c[t]["doubled"] for t in tables) + (c["client_submitted"] - c["client_submitted_distinct"])
    stray = sum(c[t]["not_in_client_log"] for t in tables)
    errors = (result["load"]["errors"] + result["baseline"]["errors"] + result.get("capacity", {}).get("errors", 0)
              + (0 if result["export"].get("status") == "done" else 1))
    p = c["pipeline"]
    aggregated = (p["undecided_with_answers"] == 0 and p["wrong_answer_count"] == 0 and p["labels_doubled"] == 0
                  and p["labels_missing"] == 0 and p["decided"] == p["answered"] > 0)
    counts_ok = errors == 0 and lost == 0 and doubled == 0 and stray == 0 and c["client_submitted"] > 0 and aggregated
    eps = result["load"]["endpoints"]
    p99 = {name: eps[name]["p99_ms"] for name in GOAL_ENDPOINTS}
    ratio = result["ratio_to_baseline"]
    return {
        "errors": errors, "lost": lost, "doubled": doubled, "stray": stray, "counts_ok": counts_ok,
        "goals": {
            "no error": errors == 0, "nothing lost or doubled": lost == 0 and doubled == 0 and stray == 0,
            "every answered item aggregated once": aggregated,
            f"p99 < {GOAL_P99_MS:.0f} ms for accept, answer, submit": all(v is not None and v < GOAL_P99_MS
                                                                           for v in p99.values()),
            f"throughput >= {GOAL_RATIO} x baseline": ratio is not None and ratio >= GOAL_RATIO,
        },
    }


# --- Report -------------------------------------------------------------------------------------

def table(result: dict) -> str:
    lines = []
    b = result["baseline"]["endpoints"]["baseline row"]
    think = (f", labeling {result['think_seconds']} s a task (0.5 to 1.5x), arriving over {result['ramp_seconds']} s"
             if result["think_seconds"] else ", no pause")
    lines.append(f"Load: {result['workers']} workers{think} for {result['seconds']:.0f} s on gunicorn "
                 f"{result['gunicorn']['workers']}x{result['gunicorn']['threads']} (gthread), PostgreSQL, Redis, "
                 f"Celery worker + beat; {result['cpus']} CPUs, load average {result['load_average']['start']} "
                 f"-> {result['load_average']['end']}")
    lines.append("")
    lines.append(f"{'endpoint':<14}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
                 f"{'max ms':>9}{'errors':>8}")

    def row(name: str, r: dict) -> str:
        f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        return (f"{name:<14}{r['requests']:>10,}{r['rps']:>9.1f}{f(r['p50_ms']):>9}{f(r['p95_ms']):>9}"
                f"{f(r['p99_ms']):>9}{f(r['max_ms']):>9}{r['errors']:>8}")

    for name, r in result["load"]["endpoints"].items():
        lines.append(row(name, r))
    lines.append(row("all (load)", {**result["load"], "p50_ms": None, "p95_ms": None, "p99_ms": None,
                                    "max_ms": None}))
    lines.append(row("baseline row", b))
    cap = result.get("capacity")
    if cap:
        lines.append("")
        lines.append(f"Capacity: the same {result['workers']} workers without a pause for {cap['seconds']:.0f} s")
        for name, r in cap["endpoints"].items():
            lines.append(row(name, r))
        lines.append(row("all (capacity)", {**cap, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}))
    lines.append("")
    flat_out = cap or result["load"]
    lines.append(f"throughput: {'capacity' if cap else 'load'} {flat_out['rps']:.1f} req/s = "
                 f"{result['ratio_to_baseline']} x the baseline ({b['rps']:.1f} req/s); "
                 f"{result['tasks_per_second']} tasks/s submitted during the load")
    c = result["counts"]
    lines.append(f"client log: {c['client_tasks_taken']} tasks taken, {c['client_answers_stored']} answers stored, "
                 f"{c['client_submitted']} submitted")
    for name in ("task_answers", "marketplace_submitted", "crowd_assignments", "reward_payments"):
        x = c[name]
        lines.append(f"  {name:<22} rows {x['rows']:>7}  distinct {x['distinct']:>7}  lost {x['lost']}  "
                     f"doubled {x['doubled']}  not in client log {x['not_in_client_log']}")
    e = result["export"]
    exported = e.get("images")
    lines.append(f"export (asked for {result['export_at']:.0f} s into the load): {e.get('status', e.get('error'))} "
                 f"in {e.get('seconds')} s, {exported} images, {e.get('files')} files")
    lines.append(f"sync: {result['drain']['recorded_by_beat_during_load']} assignments recorded by beat during the "
                 f"load; final sync {result['drain']['final_sync_seconds']} s")
    for phase in ("load", "capacity", "baseline"):
        if f"{phase}_cpu_cores" not in result:
            continue
        lines.append(f"CPU cores used during the {phase}: " + ", ".join(
            f"{k} {v:.2f}" for k, v in result[f"{phase}_cpu_cores"].items()))
    for phase, per in result.get("cpu_ms_per_request", {}).items():
        lines.append(f"CPU ms per request during the {phase}: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    pg = result["load_postgres_backends"]
    lines.append(f"PostgreSQL backends during the load ({pg['samples']} samples): {pg['active_mean']} active on "
                 f"average, {pg['lock_waiting_mean']} waiting for a lock (at most {pg['lock_waiting_max']})")
    lines.append("goals: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in result["verdict"]["goals"].items()))
    examples = result["load"]["error_examples"] + (cap or {}).get("error_examples", [])
    if examples:
        lines.append("first errors: " + " | ".join(examples[:5]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    stack = Stack(args)
    result: dict = {"benchmark": "load", "workers": args.workers, "seconds": args.seconds,
                    "baseline_seconds": args.baseline_seconds, "cpus": os.cpu_count(),
                    "gunicorn": {"workers": args.gunicorn_workers, "threads": args.gunicorn_threads,
                                 "class": "gthread"},
                    "celery_concurrency": args.celery_concurrency, "hits": args.hits,
                    "max_assignments": args.assignments, "images_per_task": args.images_per_task,
                    "sync_seconds": args.sync_seconds, "think_seconds": args.think, "ramp_seconds": args.ramp,
                    "capacity_seconds": args.capacity_seconds, "export_at": args.export_at,
                    "load_average": {"start": round(os.getloadavg()[0], 1)}}
    try:
        t0 = time.perf_counter()
        stack.start_services()
        django_setup(stack.env)
        setup = setup_platform(stack, args)
        result["setup_seconds"] = {k: round(v, 1) for k, v in setup.seconds.items()}
        result["setup_seconds"]["total"] = round(time.perf_counter() - t0, 1)
        activity = PgActivity(stack.pg.port)
        try:
            run = asyncio.run(client_run(stack.base, setup, args, lambda: cpu_snapshot(stack), activity,
                                         py_spy(stack, args.py_spy)))
        finally:
            activity.close()
        result["load_average"]["end_of_load"] = round(os.getloadavg()[0], 1)
        log: ClientLog = run.pop("log")
        result["signup_seconds"] = run["signup_seconds"]
        for key in ("baseline", "load", "export", "baseline_cpu_cores", "load_cpu_cores", "load_postgres_backends",
                    "capacity", "capacity_cpu_cores"):
            if key in run:
                result[key] = run[key]
        result["processes_alive"] = stack.alive()
        result["drain"] = drain(setup, log)
        result["counts"] = count(setup, log)
        base_rps = result["baseline"]["rps"]
        flat_out = result.get("capacity", result["load"])  # the throughput is measured without a pause
        result["ratio_to_baseline"] = round(flat_out["rps"] / base_rps, 3) if base_rps else None
        # Where each request's CPU went, on this machine, in the phase the ratio compares.
        flat_phase = "capacity" if "capacity" in result else "load"
        result["cpu_ms_per_request"] = {
            phase: {k: round(1000 * v / rps, 3) for k, v in result[f"{phase}_cpu_cores"].items()
                    if k != "others" and rps}
            for phase, rps in (("baseline", base_rps), (flat_phase, flat_out["rps"]))}
        result["tasks_per_second"] = round(result["load"]["endpoints"]["submit"]["requests"]
                                           / result["load"]["seconds"], 1)
        if "capacity" in result:
            result["capacity_tasks_per_second"] = round(
                result["capacity"]["endpoints"]["submit"]["requests"] / result["capacity"]["seconds"], 1)
        result["load_average"]["end"] = round(os.getloadavg()[0], 1)
        result["verdict"] = verdict(result)
        if args.keep:
            (stack.dir / "client-log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log.entries))
            result["kept"] = str(stack.dir)
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        keep_dir = stack.dir if args.keep else None
        stack.stop()
        if keep_dir is None:
            shutil.rmtree(stack.dir, ignore_errors=True)
    print(table(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if outcome["verdict"]["counts_ok"] else 1)
