"""Benchmark of the marketplace, driven as a third party drives it.

Starts the platform under gunicorn on a free port (a temporary ANNOTATOR_VAR_DIR, SQLite, DEBUG
on, rate limit off), then:

1. creates N HITs (default 10,000, three assignments each) with boto3's CreateHITWithHITType;
2. simulated workers accept and submit every assignment through the worker site over HTTP
   (POST /market/hits/<id>/accept/, then POST /mturk/externalSubmit);
3. reads everything back with boto3 paginators (ListHITs, ListReviewableHITs,
   ListAssignmentsForHIT) and approves a sample;
4. measures how a full ListHITs walk scales: the cost per item at 1/10 of the HITs and at all of
   them, and the cost of the first page against the last (keyset pages should cost the same).

Prints a table for people, then one JSON object as the last line.

    .venv/bin/python benchmarks/marketplace.py                 # 10,000 HITs, 30,000 assignments
    .venv/bin/python benchmarks/marketplace.py --hits 1000     # a quick run
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import requests
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
QUESTION = ('<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/'
            'ExternalQuestion.xsd"><ExternalURL>https://tasks.example.org/label</ExternalURL>'
            '<FrameHeight>600</FrameHeight></ExternalQuestion>')
PASSWORD = "Bench-pass-48213"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *, processes: int, threads: int) -> None:
        self.var = Path(tempfile.mkdtemp(prefix="annotator-bench-market-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "ANNOTATOR_VAR_DIR": str(self.var), "DEBUG": "true",
                    "SECRET_KEY": "benchmark-only-secret-key-0123456789abcdefghijklmnop",
                    "MARKETPLACE_API_RATE": "0", "ALLOWED_HOSTS": "127.0.0.1,localhost",
                    "PUBLIC_BASE_URL": self.base, "LOG_LEVEL": "WARNING", "DATABASE_URL": ""}
        self.env.pop("DATABASE_URL")
        self.processes, self.threads = processes, threads
        self.proc: subprocess.Popen | None = None

    def manage(self, *args: str) -> str:
        done = subprocess.run([PYTHON, str(ROOT / "manage.py"), *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self) -> "Server":
        self.manage("migrate", "--verbosity", "0")
        gunicorn = Path(PYTHON).with_name("gunicorn")
        self.log = (self.var / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [str(gunicorn), "annotator.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", str(self.processes),
             "-k", "gthread", "--threads", str(self.threads), "--log-level", "warning", "--timeout", "120"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/healthz", timeout=2).status_code < 500:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("the server did not start:\n" + (self.var / "server.log").read_text()[-3000:])

    def stop(self, keep: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if not keep:
            shutil.rmtree(self.var, ignore_errors=True)


class WorkerClient:
    def __init__(self, base: str, username: str) -> None:
        self.base, self.username = base, username
        self.session = requests.Session()

    def sign_up(self, code: str) -> None:
        self.session.get(f"{self.base}/market/join/{code}/")
        r = self.session.post(f"{self.base}/market/signup/", data={
            "username": self.username, "country": "US", "password1": PASSWORD, "password2": PASSWORD,
            "invite_code": code, "csrfmiddlewaretoken": self.session.cookies["csrftoken"]}, allow_redirects=False)
        if r.status_code != 302:
            raise RuntimeError(f"sign-up of {self.username} failed: {r.status_code} {r.text[:300]}")

    def accept(self, hit_id: str) -> str:
        r = self.session.post(f"{self.base}/market/hits/{hit_id}/accept/", allow_redirects=False,
                              headers={"X-CSRFToken": self.session.cookies["csrftoken"]})
        if r.status_code != 302:
            raise RuntimeError(f"accept failed: {r.status_code} {r.text[:300]}")
        return r.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def submit(self, assignment_id: str, answer: str) -> None:
        r = self.session.post(f"{self.base}/mturk/externalSubmit",
                              data={"assignmentId": assignment_id, "label": answer})
        if r.status_code != 200:
            raise RuntimeError(f"submit failed: {r.status_code} {r.text[:300]}")


class Timer:
    def __init__(self) -> None:
        self.results: dict[str, dict] = {}
        self.lock = threading.Lock()

    def record(self, name: str, count: int, seconds: float, **extra) -> None:
        with self.lock:
            self.results[name] = {"count": count, "seconds": round(seconds, 3),
                                  "ops_per_second": round(count / seconds, 1) if seconds else None, **extra}


def client(base: str, key: dict):
    return boto3.client("mturk", endpoint_url=base + "/mturk-api/", region_name="us-east-1",
                        aws_access_key_id=key["aws_access_key_id"],
                        aws_secret_access_key=key["aws_secret_access_key"],
                        config=Config(retries={"total_max_attempts": 3}, max_pool_connections=32))


def walk_list_hits(mturk) -> tuple[int, float, list[float]]:
    """A full ListHITs walk with 100 per page: items, seconds, and each page's latency."""
    start, n, pages = time.perf_counter(), 0, []
    kwargs = {"MaxResults": 100}
    while True:
        t = time.perf_counter()
        page = mturk.list_hits(**kwargs)
        pages.append(time.perf_counter() - t)
        n += page["NumResults"]
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    return n, time.perf_counter() - start, pages


def run(args) -> dict:
    server = Server(processes=args.processes, threads=args.server_threads).start()
    timer = Timer()
    scaling: dict = {}
    try:
        server.manage("shell", "-c", "from django.contrib.auth.models import User; "
                      "User.objects.create_user('bench', password='x')")
        server.manage("create_requester_key", "bench", "--balance", "1000000", "--public", "--save")
        key = json.loads((server.var / "requester-key.json").read_text())
        code = server.manage("create_worker_invite", "bench", "--uses", str(args.workers)).strip().rstrip("/")
        code = code.rsplit("/", 1)[-1]

        workers = [WorkerClient(server.base, f"w{i:03d}") for i in range(args.workers)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda w: w.sign_up(code), workers))

        local = threading.local()

        def mturk():
            if not hasattr(local, "client"):
                local.client = client(server.base, key)
            return local.client

        hit_type = mturk().create_hit_type(Title="Benchmark labeling", Description="Label one image.",
                                           Reward="0.02", AssignmentDurationInSeconds=3600,
                                           AutoApprovalDelayInSeconds=86400)["HITTypeId"]

        def create(i: int) -> str:
            return mturk().create_hit_with_hit_type(HITTypeId=hit_type, MaxAssignments=args.assignments,
                                                    LifetimeInSeconds=86400, Question=QUESTION,
                                                    RequesterAnnotation=f"bench-{i}")["HIT"]["HITId"]

        hit_ids: list[str] = []
        first_batch = max(1, args.hits // 10)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            hit_ids += list(pool.map(create, range(first_batch)))
        t_first = time.perf_counter() - t0
        n, secs, pages = walk_list_hits(mturk())
        scaling[str(n)] = {"items": n, "seconds": round(secs, 3), "ms_per_item": round(1000 * secs / n, 4),
                           "first_page_ms": round(1000 * pages[0], 2), "last_page_ms": round(1000 * pages[-1], 2)}
        t1 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            hit_ids += list(pool.map(create, range(first_batch, args.hits)))
        timer.record("CreateHITWithHITType", len(hit_ids), t_first + time.perf_counter() - t1)

        # Worker w takes the HITs whose index falls on its stride, three distinct workers per HIT.
        jobs = [(k, hit_ids[i]) for i in range(len(hit_ids)) for k in range(args.assignments)]
        per_worker: dict[int, list[str]] = {w: [] for w in range(args.workers)}
        for idx, (k, hit_id) in enumerate(jobs):
            per_worker[(idx // args.assignments + k * (args.workers // args.assignments)) % args.workers].append(hit_id)
        accept_time, submit_time, done = [0.0], [0.0], [0]
        lock = threading.Lock()

        def work(w: int) -> None:
            worker = workers[w]
            a_t = s_t = 0.0
            for hit_id in per_worker[w]:
                t = time.perf_counter()
                aid = worker.accept(hit_id)
                a_t += time.perf_counter() - t
                t = time.perf_counter()
                worker.submit(aid, f"answer-{w}")
                s_t += time.perf_counter() - t
            with lock:
                accept_time[0] += a_t
                submit_time[0] += s_t
                done[0] += len(per_worker[w])

        t = time.perf_counter()
        with ThreadPoolExecutor(args.worker_threads) as pool:
            list(pool.map(work, range(args.workers)))
        wall = time.perf_counter() - t
        timer.record("worker accept+submit (wall)", done[0], wall)
        # Per-operation rates: the share of the wall time each kind of request took.
        share = accept_time[0] + submit_time[0]
        timer.record("worker accept", done[0], wall * accept_time[0] / share)
        timer.record("worker externalSubmit", done[0], wall * submit_time[0] / share)

        n, secs, pages = walk_list_hits(mturk())
        scaling[str(n)] = {"items": n, "seconds": round(secs, 3), "ms_per_item": round(1000 * secs / n, 4),
                           "first_page_ms": round(1000 * pages[0], 2), "last_page_ms": round(1000 * pages[-1], 2)}
        timer.record("ListHITs (items, paginator, 100/page)", n, secs)

        t = time.perf_counter()
        reviewable = [h["HITId"] for p in mturk().get_paginator("list_reviewable_hits").paginate(
            PaginationConfig={"PageSize": 100}) for h in p["HITs"]]
        timer.record("ListReviewableHITs (items)", len(reviewable), time.perf_counter() - t)

        def assignments_of(hit_id: str) -> list[dict]:
            return [a for p in mturk().get_paginator("list_assignments_for_hit").paginate(HITId=hit_id)
                    for a in p["Assignments"]]

        t = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            listed = [a for chunk in pool.map(assignments_of, hit_ids) for a in chunk]
        timer.record("ListAssignmentsForHIT (items)", len(listed), time.perf_counter() - t,
                     calls=len(hit_ids))

        sample = [a["AssignmentId"] for a in listed[: args.approve]]
        t = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda aid: mturk().approve_assignment(AssignmentId=aid), sample))
        timer.record("ApproveAssignment", len(sample), time.perf_counter() - t)

        t = time.perf_counter()
        for _ in range(200):
            mturk().get_hit(HITId=hit_ids[len(hit_ids) // 2])
        timer.record("GetHIT", 200, time.perf_counter() - t)

        problems = []
        if len(reviewable) != len(hit_ids):
            problems.append(f"{len(reviewable)} reviewable HITs, expected {len(hit_ids)}")
        if len(listed) != len(hit_ids) * args.assignments:
            problems.append(f"{len(listed)} assignments listed, expected {len(hit_ids) * args.assignments}")
        return {"benchmark": "marketplace", "hits": len(hit_ids), "assignments": len(listed),
                "workers": args.workers, "server": f"gunicorn {args.processes}x{args.server_threads} gthread, SQLite",
                "client_threads": args.threads, "worker_threads": args.worker_threads,
                "operations": timer.results, "list_hits_scaling": scaling, "problems": problems}
    finally:
        server.stop(keep=args.keep)


def print_table(result: dict) -> None:
    print(f"\nMarketplace benchmark: {result['hits']} HITs, {result['assignments']} assignments, "
          f"{result['workers']} workers, {result['server']}")
    print(f"{'operation':45} {'count':>8} {'seconds':>9} {'ops/s':>9}")
    for name, r in result["operations"].items():
        print(f"{name:45} {r['count']:>8} {r['seconds']:>9.2f} {r['ops_per_second'] or 0:>9.1f}")
    print("\nListHITs full walk (100 per page):")
    print(f"{'HITs':>8} {'seconds':>9} {'ms/item':>9} {'first page ms':>14} {'last page ms':>13}")
    for s in result["list_hits_scaling"].values():
        print(f"{s['items']:>8} {s['seconds']:>9.2f} {s['ms_per_item']:>9.4f} {s['first_page_ms']:>14.2f} "
              f"{s['last_page_ms']:>13.2f}")
    if result["problems"]:
        print("PROBLEMS:", "; ".join(result["problems"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hits", type=int, default=10_000)
    parser.add_argument("--assignments", type=int, default=3, help="MaxAssignments of every HIT")
    parser.add_argument("--workers", type=int, default=30, help="simulated workers (at least --assignments)")
    parser.add_argument("--threads", type=int, default=8, help="boto3 client threads")
    parser.add_argument("--worker-threads", type=int, default=8, help="workers working at once")
    parser.add_argument("--processes", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--server-threads", type=int, default=4, help="threads per gunicorn process")
    parser.add_argument("--approve", type=int, default=3000, help="how many assignments to approve")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var/ folder")
    args = parser.parse_args(argv)
    if args.workers < args.assignments:
        parser.error("--workers must be at least --assignments (one assignment per worker per HIT)")
    # A SIGTERM unwinds through run()'s finally, so the server it started stops too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    result = run(args)
    print_table(result)
    print(json.dumps(result))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
