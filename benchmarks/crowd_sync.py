"""Publish and sync N HITs with 3 assignments each through boto3, and count what it costs.

    .venv/bin/python benchmarks/crowd_sync.py                      # 1,000 and 10,000 HITs, our marketplace
    .venv/bin/python benchmarks/crowd_sync.py --hits 200 --target fake

Targets: ``marketplace`` (default) runs our MTurk-compatible marketplace under gunicorn (2 sync
workers) on loopback, with a fresh SQLite database in a temporary folder; ``fake`` runs the
tests' fake MTurk server in a thread. Either way the crowd code is the production code: the
one boto3 adapter, with SigV4 signing and botocore's retries.

Per size it measures: publishing (``stage_launch``: CreateHITType, GetAccountBalance,
CreateHITWithHITType per HIT), then, after simulated workers did every assignment (accept, our
server stores the answer, submit: not timed, done in-process on the marketplace's side), one
``stage_sync`` (ListReviewableHITs pages, ListAssignmentsForHIT per HIT, one Approve per
assignment, DeleteHIT per HIT). API calls are counted on the client (botocore's
``before-send`` event, so retries count too). The sync must cost the same number of calls per
HIT at every size: only one list call per 100 HITs, never a per-HIT call a list could answer.

Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(var_dir: Path, port: int) -> dict[str, str]:
    return {
        "ANNOTATOR_VAR_DIR": str(var_dir), "SECRET_KEY": "benchmark-secret-key-0123456789-abcdefghijklmnopqrstuvw",
        "DEBUG": "false", "SECURE_SSL_REDIRECT": "false", "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "MARKETPLACE_ALLOW_HTTP_LOOPBACK": "true",
        "CROWD_ALLOW_HTTP_LOOPBACK": "true", "MARKETPLACE_API_RATE": "1000000", "MARKETPLACE_API_BURST": "1000000",
        "MARKETPLACE_VALIDATE_RESPONSES": "false", "LOG_LEVEL": "WARNING",
    }


class Target:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.var_dir = Path(tempfile.mkdtemp(prefix="annotator-bench-"))
        self.port = _free_port()
        os.environ.update(_environment(self.var_dir, self.port))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotator.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        self.proc: subprocess.Popen | None = None
        self.fake = None

    def start(self) -> None:
        from django.conf import settings

        if self.kind == "fake":
            from tests.crowd.fake_mturk import FakeMTurkServer

            self.fake = FakeMTurkServer().start()
            self.fake.service.state.balance = 10**9
            settings.MTURK_ENDPOINT_URL = self.fake.url
            settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY = "AKIDBENCH", "bench-secret"
            return
        import io
        import re

        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        get_user_model().objects.create_user("bench-requester", password="not-used-0123")
        out = io.StringIO()
        call_command("create_requester_key", "bench-requester", "--balance", "10000000", "--public", stdout=out)
        settings.AWS_ACCESS_KEY_ID = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", out.getvalue())[1]
        settings.AWS_SECRET_ACCESS_KEY = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", out.getvalue())[1]
        settings.MTURK_ENDPOINT_URL = f"http://127.0.0.1:{self.port}/mturk-api/"
        self.log = (self.var_dir / "gunicorn.log").open("wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "annotator.wsgi", "-w", "2", "-b",
             f"127.0.0.1:{self.port}", "--timeout", "120"],
            cwd=ROOT, env={**os.environ}, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        from tests.services import wait_for_port

        wait_for_port(self.port, timeout=60, proc=self.proc, log=self.var_dir / "gunicorn.log")

    def workers(self, n: int) -> list:
        if self.kind == "fake":
            return [f"ABENCHWORKER{i:02d}" for i in range(n)]
        from crowd.marketplace import services as market  # the worker side, simulated in-process

        return [market.worker_sign_up(username=f"bench-worker-{i}", password="Bench-pass-9271") for i in range(n)]

    def do_assignment(self, worker, hit_id: str) -> tuple[str, str]:
        """Accept, then submit the form; returns (assignment id, worker id)."""
        if self.kind == "fake":
            return self.fake.service.accept(hit_id, worker), worker
        from crowd.marketplace import services as market

        a = market.assignment_accept(worker=worker, hit_id=hit_id)
        return a.assignment_id, worker.worker_id

    def submit(self, worker, assignment_id: str, fields: dict) -> None:
        if self.kind == "fake":
            self.fake.service.submit(assignment_id, fields)
            return
        from crowd.marketplace import services as market

        market.assignment_submit(worker=worker, assignment_id=assignment_id, fields=list(fields.items()))

    def stop(self) -> None:
        if self.fake:
            self.fake.stop()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        shutil.rmtree(self.var_dir, ignore_errors=True)


def run_size(target: Target, n_hits: int, workers: list) -> dict:
    from decimal import Decimal

    from django.contrib.auth import get_user_model

    from crowd import services
    from crowd.models import HIT, CrowdStage
    from crowd.providers.mturk import client_for
    from datasets.models import Category, Image, Project
    from frontend.models import TaskItem
    from frontend.services import answer_submit

    calls: Counter[str] = Counter()

    def count(**kwargs):
        calls[kwargs["event_name"].rsplit(".", 1)[-1]] += 1

    client = client_for(None)
    client.meta.events.register("before-send.mturk.*", count)

    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    project = Project.objects.create(name=f"Bench {n_hits}", owner=owner, budget_usd=Decimal("10000000"))
    Category.objects.create(project=project, coco_id=1, name="person")
    Image.objects.bulk_create(
        Image(project=project, file=f"b/{project.pk}/{i}.png", width=64, height=48, format="PNG", file_size=1,
              sha256=f"{project.pk:08d}{i:056d}", original_name=f"{i}.png") for i in range(n_hits))
    stage = CrowdStage.objects.create(
        project=project, name="bench", kind="categories", title=f"Benchmark {n_hits} ({time.time_ns()})",
        description="Tick what you see.", reward=Decimal("0.05"), max_assignments=3, items_per_hit=1,
        lifetime_s=86400, assignment_duration_s=600, auto_approval_delay_s=86400)

    t0 = time.perf_counter()
    plan, published = services.stage_launch(stage_id=stage.pk)
    publish_s = time.perf_counter() - t0
    publish_calls = dict(calls)
    assert published.published == n_hits, (plan, published)

    t0 = time.perf_counter()
    for hit in HIT.objects.filter(stage=stage).order_by("id"):
        task = TaskItem.objects.get(pk=hit.task_ref)
        for w in workers[:3]:
            aid, wid = target.do_assignment(w, hit.provider_hit_id)
            body = {"schema": "annotator.answer/categories", "version": 1,
                    "images": [{"image": i, "present": []} for i in hit.items]}
            stored, _ = answer_submit(task=task, worker_id=wid, assignment_id=aid, hit_id=hit.provider_hit_id,
                                      answer=body)
            target.submit(w, aid, {"answerId": str(stored.pk), "summary": stored.summary})
    work_s = time.perf_counter() - t0

    calls.clear()
    t0 = time.perf_counter()
    report = services.stage_sync(stage_id=stage.pk)
    sync_s = time.perf_counter() - t0
    sync_calls = dict(calls)
    client.meta.events.unregister("before-send.mturk.*", count)
    assert report.approved == 3 * n_hits and report.disposed == n_hits, vars(report)
    return {
        "hits": n_hits, "assignments": 3 * n_hits,
        "publish_s": round(publish_s, 2), "publish_hits_per_s": round(n_hits / publish_s, 1),
        "publish_calls": publish_calls, "publish_calls_per_hit": round(sum(publish_calls.values()) / n_hits, 3),
        "work_simulation_s": round(work_s, 2),
        "sync_s": round(sync_s, 2), "sync_hits_per_s": round(n_hits / sync_s, 1),
        "sync_calls": sync_calls, "sync_calls_per_hit": round(sum(sync_calls.values()) / n_hits, 3),
        "sync_ms_per_hit": round(1000 * sync_s / n_hits, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--target", choices=["marketplace", "fake"], default="marketplace")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    target = Target(args.target)
    results = []
    try:
        target.start()
        workers = target.workers(3)
        for n in args.hits:
            results.append(run_size(target, n, workers))
            print(f"... {n} HITs done: {json.dumps(results[-1], sort_keys=True)}", file=sys.stderr, flush=True)
    finally:
        target.stop()

    head = f"{'HITs':>7} {'publish s':>10} {'HITs/s':>8} {'calls/HIT':>9} | {'sync s':>8} {'HITs/s':>8} " \
           f"{'calls/HIT':>9} {'ms/HIT':>7} | sync calls by operation"
    print(f"crowd sync benchmark against {args.target} (3 assignments per HIT)")
    print(head)
    print("-" * len(head))
    for r in results:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r["sync_calls"].items()))
        print(f"{r['hits']:>7} {r['publish_s']:>10} {r['publish_hits_per_s']:>8} {r['publish_calls_per_hit']:>9} | "
              f"{r['sync_s']:>8} {r['sync_hits_per_s']:>8} {r['sync_calls_per_hit']:>9} {r['sync_ms_per_hit']:>7} | {ops}")
    summary = {"benchmark": "crowd_sync", "target": args.target, "assignments_per_hit": 3, "results": results}
    if len(results) >= 2:
        a, b = results[0], results[-1]
        summary["scaling"] = {
            "hits_ratio": round(b["hits"] / a["hits"], 2),
            "sync_calls_ratio": round(sum(b["sync_calls"].values()) / sum(a["sync_calls"].values()), 3),
            "sync_time_ratio": round(b["sync_s"] / a["sync_s"], 2),
        }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
