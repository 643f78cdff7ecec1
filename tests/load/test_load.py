"""The load benchmark, small: 20 simulated workers for 30 seconds on the production shape.

``benchmarks/load.py`` starts PostgreSQL, Redis, gunicorn, a Celery worker and beat, has the
workers take, load, answer and submit tasks in our marketplace while beat syncs and an export
runs, then counts. This test runs it as a separate process (it sets up Django on its own
database) and checks the counts a requester and the workers rely on, never the timings: every
request answered as expected, every submitted answer stored once in each place, each reward paid
once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run():
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "SERVE_MEDIA", "DATABASE_URL",
                        "ANNOTATOR_VAR_DIR", "CELERY_BROKER_URL", "CACHE_URL")}
    done = subprocess.run([sys.executable, "benchmarks/load.py", "--workers", "20", "--seconds", "30", "--think", "2",
                           "--capacity-seconds", "10"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output (exit {done.returncode}):\n{done.stderr[-4000:]}"
    try:
        result = json.loads(lines[-1])
    except ValueError:
        pytest.fail(f"the last line is not JSON (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}")
    result["_table"] = "\n".join(lines[:-1])
    result["_exit"] = done.returncode
    return result


@pytest.mark.services
def test_every_request_of_workers_export_and_baseline_is_answered_as_expected(run):
    assert run["load"]["errors"] == 0, run["_table"]
    assert run["baseline"]["errors"] == 0, run["_table"]
    # The paced load (labeling 1 to 3 s a task, arriving over 2 s) and the capacity phase after it
    # (the same workers without a pause) both ran, without an error.
    assert run["think_seconds"] == 2 and run["ramp_seconds"] == 2
    assert run["capacity"]["errors"] == 0, run["_table"]
    assert run["capacity"]["endpoints"]["submit"]["requests"] > 0, run["_table"]
    assert run["counts"]["pool_empty_answers"] == 0, "the HIT pool ran out: publish more HITs"
    # Work was done on every step of the flow, by many workers at once.
    endpoints = run["load"]["endpoints"]
    assert all(endpoints[name]["requests"] > 0 for name in
               ("accept", "work page", "task page", "image", "answer", "submit")), run["_table"]
    assert endpoints["image"]["requests"] == 2 * endpoints["task page"]["requests"]
    assert run["processes_alive"] == {"web": True, "beat": True, "worker": True}
    # The researcher's export asked for during the load finished.
    assert run["export"]["status"] == "done", run["export"]


@pytest.mark.services
def test_no_submitted_answer_is_lost_or_stored_twice(run):
    counts = run["counts"]
    submitted = counts["client_submitted"]
    assert submitted >= 20, run["_table"]  # at least one task per worker
    assert counts["client_submitted_distinct"] == submitted
    assert counts["client_answers_stored"] == submitted == counts["client_tasks_taken"]
    for place in ("task_answers", "marketplace_submitted", "crowd_assignments", "reward_payments"):
        assert counts[place] == {"rows": submitted, "distinct": submitted, "doubled": 0, "lost": 0,
                                 "not_in_client_log": 0}, (place, run["_table"])
    # After the sync every submitted assignment is approved, on both sides, and nothing is left over.
    assert counts["marketplace_states"] == {"Approved": submitted}
    assert counts["crowd_states"] == {"approved": submitted}
    assert counts["crowd_unattached"] == 0
    assert run["drain"]["touched_hits_not_disposed"] == 0
    assert run["verdict"]["counts_ok"] is True and run["_exit"] == 0


@pytest.mark.services
def test_the_answers_were_aggregated_as_they_arrived_once_each(run):
    # The stage is part of the pipeline: Celery aggregated answers during the load, and after the
    # HITs ended every answered image was decided once, on all its HIT's answers.
    p = run["counts"]["pipeline"]
    assert p["answered"] > 0 and p["decided"] == p["answered"], (p, run["_table"])
    assert (p["undecided_with_answers"], p["wrong_answer_count"], p["labels_doubled"], p["labels_missing"]) == (
        0, 0, 0, 0), p
