"""PostgreSQL restarted in the middle of an export built by a real Celery worker, with beat
running: the build fails on its next database write, its lease runs out, beat's recovery
queues it again, and the export ends done, complete and alone in the storage."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.reliability.stack import make_stack

pytestmark = [pytest.mark.services]

FILL = r'''
import json
from datasets.exports.service import export_create
from tests.exports.builders import build_project
built = build_project(n_images=40)
export = export_create(project=built.project, formats=["coco", "imagefolder", "shards"], min_shards=8)
print(json.dumps({"project": built.project.pk, "export": export.pk}))
'''


def test_an_export_interrupted_by_a_postgresql_restart_is_built_again_by_beat(tmp_path):
    stack = make_stack(tmp_path, EXPORT_PROGRESS_SECONDS="0", EXPORT_LEASE_SECONDS="3", EXPORT_RECOVER_SECONDS="1")
    try:
        worker = stack.start("worker", [sys.executable, "-m", "celery", "-A", "annotator", "worker", "--loglevel=INFO",
                                        "--concurrency=1", "-Q", "annotator", "--without-gossip", "--without-mingle"])
        deadline = time.monotonic() + 60
        while " ready." not in stack.log("worker"):
            assert worker.poll() is None and time.monotonic() < deadline, stack.log("worker")[-3000:]
            time.sleep(0.2)
        filled = stack.shell(FILL)
        pk = filled["export"]

        def row():
            return stack.sql("SELECT status, progress_done, storage_prefix, attempts, error FROM datasets_export "
                             "WHERE id = %s", pk)[0]

        deadline = time.monotonic() + 90
        while not (row()[0] == "running" and row()[1] > 5):
            assert time.monotonic() < deadline and row()[0] in ("pending", "running"), (row(), stack.log("worker")[-3000:])
            time.sleep(0.02)
        first_prefix = row()[2]
        stack.pg.restart(pause=1.0)
        # Beat starts only now, as the operator's beat would already be running: it must find the
        # stranded export by its lease.
        stack.start("beat", [sys.executable, "-m", "celery", "-A", "annotator", "beat", "--loglevel=INFO",
                             "-s", str(tmp_path / "beat-schedule")])
        deadline = time.monotonic() + 180
        while row()[0] not in ("done", "failed"):
            assert time.monotonic() < deadline, (row(), stack.log("worker")[-4000:], stack.log("beat")[-2000:])
            time.sleep(0.3)
        status, _, prefix, attempts, error = row()
        assert status == "done", (error, stack.log("worker")[-4000:])
        assert attempts == 2 and prefix != first_prefix
        # Only the finished export's files are in the storage: the interrupted build's are gone.
        media = Path(stack.var) / "media" / "exports" / f"project-{filled['project']}"
        assert sorted(p.name for p in media.iterdir()) == [Path(prefix).name]
        files = stack.sql("SELECT files FROM datasets_export WHERE id = %s", pk)[0][0]
        stored = sorted(str(p.relative_to(media / Path(prefix).name)) for p in (media / Path(prefix).name).rglob("*")
                        if p.is_file())
        assert stored == sorted(f["name"] for f in files)
        assert "exports_recover" in stack.log("worker")
    finally:
        stack.stop()
