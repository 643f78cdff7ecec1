"""A small simulation end to end on the real stack, as `manage.py simulate` runs it: Django's
threaded server, a real Celery worker process, the marketplace through boto3, simulated workers
over HTTP; the pipeline's result is checked against the scenes' exact truth."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_a_simulated_crowd_takes_scenes_through_every_stage(tmp_path):
    env = dict(os.environ, ANNOTATOR_VAR_DIR=str(tmp_path), DEBUG="true", CELERY_BROKER_URL="filesystem://")
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run(manage + ["migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    run = subprocess.run(manage + ["simulate", "--mode", "adaptive", "--images", "6", "--categories", "4",
                                   "--seed", "3", "--timeout", "600"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=840)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])["reports"]["adaptive"]
    assert report["unfinished"] == 0
    # Every stage did its work through the marketplace, and the figures match the truth.
    for stage in ("categories", "spotting", "segmentation", "verification", "training"):
        assert report["stages"][stage]["assignments"] > 0, stage
    assert report["categories"]["precision"] >= 0.9 and report["categories"]["recall"] >= 0.9
    assert report["instances"]["exact"] >= 0.75
    assert report["outlines"]["mean_iou"] >= 0.7 and report["outlines"]["share_iou_50"] >= 0.8
    # Adaptive redundancy used fewer than COCO's 8 answers per image, and replaying every decision
    # from the stored answers gives the same results.
    assert report["stages"]["categories"]["per_item"] < 8
    assert report["recompute"]["items"] > 0 and report["recompute"]["changed"] == 0
