"""Shards written by forked processes (``EXPORT_PROCESSES``): the bytes of one process, with
failures, cancels, S3 and a real Celery worker handled as one process handles them.

The builds here run outside any transaction (``transaction=True``): a build inside one writes
in its own process, since other processes would not see the transaction's rows.
"""
from __future__ import annotations

import errno
import hashlib
import os
import signal
import time

import pytest
from django.core.files.storage import default_storage

from datasets.exports import service
from datasets.exports.processes import ForkedWorkers, WorkerDied
from datasets.exports.service import export_build, export_create, export_processes, export_storage_name, storage_remove_prefix
from datasets.models import Export
from tests.exports.builders import build_project

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

OPTIONS = dict(formats=["coco", "shards", "imagefolder"], min_shards=4, seed=7)


def stored_under(prefix: str) -> list[str]:
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return []
    return [f"{prefix}/{f}" for f in files] + [name for folder in folders for name in stored_under(f"{prefix}/{folder}")]


def contents(export: Export) -> dict[str, bytes]:
    out = {}
    for entry in export.files:
        with default_storage.open(export_storage_name(export=export, name=entry["name"]), "rb") as f:
            out[entry["name"]] = f.read()
    return out


@pytest.fixture(autouse=True)
def processes_for_small_exports(settings):
    """These projects are small: a process for every sample, or their exports would be written in
    one process (``EXPORT_SAMPLES_PER_PROCESS``; its own test below sets it back)."""
    settings.EXPORT_SAMPLES_PER_PROCESS = 1


@pytest.fixture
def spied(monkeypatch):
    """The process counts builds chose, and the worker pools they started."""
    seen = {"processes": [], "pools": []}
    real_count, real_enter = service.export_processes, ForkedWorkers.__enter__

    def count(**kwargs):
        seen["processes"].append(real_count(**kwargs))
        return seen["processes"][-1]

    def enter(self):
        seen["pools"].append(self)
        return real_enter(self)

    monkeypatch.setattr(service, "export_processes", count)
    monkeypatch.setattr(ForkedWorkers, "__enter__", enter)
    return seen


def assert_children_gone(seen) -> None:
    for pool in seen["pools"]:
        for child in pool.children:
            assert child.status is not None, f"shard writer {child.pid} was not reaped"
            with pytest.raises(ProcessLookupError):
                os.kill(child.pid, 0)


@pytest.mark.postgres_matrix
@pytest.mark.django_db(transaction=True)
def test_shards_written_by_several_processes_are_the_bytes_of_one(settings, spied):
    built = build_project(n_images=30)
    exports = {}
    for processes in (1, 2, 3):
        settings.EXPORT_PROCESSES = processes
        export = export_build(export_id=export_create(project=built.project, queue=False, **OPTIONS).pk)
        assert export.status == Export.Status.DONE, export.error
        exports[processes] = export
    assert spied["processes"] == [1, 2, 3]
    # This process writes shards too: one child fewer than processes.
    assert len(spied["pools"]) == 2 and [len(p.children) for p in spied["pools"]] == [1, 2]
    one = contents(exports[1])
    shards = [name for name in one if name.startswith("shards/")]
    assert len(shards) >= 8
    for processes in (2, 3):
        assert exports[processes].files == exports[1].files
        assert contents(exports[processes]) == one  # every file, manifest.json included
        assert exports[processes].counts == exports[1].counts
    assert_children_gone(spied)
    for export in exports.values():
        storage_remove_prefix(export.storage_prefix)  # media outlives the test's rows


@pytest.mark.django_db(transaction=True)
def test_progress_is_reported_while_processes_write(settings, monkeypatch, spied):
    settings.EXPORT_PROGRESS_SECONDS = 0
    settings.EXPORT_PROCESSES = 2
    built = build_project(n_images=20)
    done = []
    real_update = service._Progress._update

    def update(self, **fields):
        if "progress_done" in fields:
            done.append(fields["progress_done"])
        return real_update(self, **fields)

    monkeypatch.setattr(service._Progress, "_update", update)
    export = export_build(export_id=export_create(project=built.project, queue=False, formats=["shards"],
                                                  min_shards=8).pk)
    assert export.status == Export.Status.DONE, export.error
    assert spied["processes"] == [2]
    assert done == sorted(done) and done[-1] == export.progress_total == 21  # 20 images, then the manifest
    assert len(set(done)) > 3  # reported as shards were written, not only at the end
    storage_remove_prefix(export.storage_prefix)


def test_one_process_inside_a_transaction(db, settings):
    settings.EXPORT_PROCESSES = 4
    assert export_processes(shards=8) == 1  # the test's transaction: other processes would not see its rows


@pytest.mark.django_db(transaction=True)
def test_the_process_count_follows_the_setting_and_the_shards(settings):
    cpus = len(os.sched_getaffinity(0))
    settings.EXPORT_PROCESSES = 0
    assert export_processes(shards=64) == cpus and export_processes(shards=1) == 1
    settings.EXPORT_PROCESSES = 3
    assert export_processes(shards=64) == 3 and export_processes(shards=2) == 2
    settings.EXPORT_PROCESSES = 1
    assert export_processes(shards=64) == 1


@pytest.mark.django_db(transaction=True)
def test_a_small_export_is_written_in_one_process(settings):
    del settings.EXPORT_SAMPLES_PER_PROCESS  # the default, service.SAMPLES_PER_PROCESS
    per = service.SAMPLES_PER_PROCESS
    settings.EXPORT_PROCESSES = 0
    cpus = len(os.sched_getaffinity(0))
    assert export_processes(shards=64, samples=1000) == 1 and export_processes(shards=64, samples=2 * per - 1) == 1
    assert export_processes(shards=64, samples=2 * per) == min(2, cpus)
    assert export_processes(shards=64, samples=1000 * per) == cpus
    settings.EXPORT_PROCESSES = 3  # the operator's cap
    assert export_processes(shards=64, samples=1000 * per) == 3 and export_processes(shards=2, samples=1000 * per) == 2
    settings.EXPORT_SAMPLES_PER_PROCESS = 10
    assert export_processes(shards=64, samples=25) == 2 and export_processes(shards=64, samples=9) == 1


@pytest.mark.postgres_matrix
@pytest.mark.django_db(transaction=True)
def test_a_small_export_in_one_process_is_the_bytes_of_several(settings, spied):
    """The process count follows the export's size; the files do not."""
    built = build_project(n_images=30)
    settings.EXPORT_PROCESSES = 2
    exports = {}
    for per_process in (service.SAMPLES_PER_PROCESS, 1):  # the default, then a process per sample
        settings.EXPORT_SAMPLES_PER_PROCESS = per_process
        export = export_build(export_id=export_create(project=built.project, queue=False, **OPTIONS).pk)
        assert export.status == Export.Status.DONE, export.error
        exports[per_process] = export
    assert spied["processes"] == [1, 2] and [len(p.children) for p in spied["pools"]] == [1]
    small, forked = exports[service.SAMPLES_PER_PROCESS], exports[1]
    assert forked.files == small.files and forked.counts == small.counts
    assert contents(forked) == contents(small)  # every file, manifest.json included
    assert_children_gone(spied)
    for export in exports.values():
        storage_remove_prefix(export.storage_prefix)


@pytest.mark.django_db(transaction=True)
def test_an_error_in_a_process_fails_the_export_and_publishes_nothing(settings, spied):
    settings.EXPORT_PROCESSES = 2
    built = build_project(n_images=16)
    missing = built.images[9].file.name
    default_storage.delete(missing)
    export = export_build(export_id=export_create(project=built.project, queue=False, formats=["shards"],
                                                  min_shards=8).pk)
    assert spied["processes"] == [2]
    assert export.status == Export.Status.FAILED and export.files == []
    assert export.error.startswith("FileNotFoundError") and missing in export.error, export.error
    assert stored_under(export.storage_prefix) == []
    assert_children_gone(spied)


@pytest.mark.postgres_matrix
@pytest.mark.django_db(transaction=True)
def test_a_full_disk_in_a_child_comes_back_as_the_same_error(settings, monkeypatch, spied):
    settings.EXPORT_PROCESSES = 2
    built = build_project(n_images=16)
    parent = os.getpid()
    real_write = service._write_shard

    def write(selection, job, ordered_ids, path, step, scratch):
        if os.getpid() != parent:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(selection, job, ordered_ids, path, step, scratch)

    monkeypatch.setattr(service, "_write_shard", write)
    export = export_build(export_id=export_create(project=built.project, queue=False, formats=["shards"],
                                                  min_shards=8).pk)
    assert spied["processes"] == [2]
    assert export.status == Export.Status.FAILED and export.files == []
    assert export.error.startswith("The disk is full"), export.error
    assert "train-000001.tar" in export.error  # the child's own path (its first shard), kept with the error
    assert stored_under(export.storage_prefix) == []
    assert_children_gone(spied)


@pytest.mark.django_db(transaction=True)
def test_a_process_killed_mid_shard_fails_the_export_and_publishes_nothing(settings, monkeypatch, spied):
    settings.EXPORT_PROCESSES = 2
    built = build_project(n_images=24)
    parent = os.getpid()
    real_write = service._write_shard

    def write(selection, job, ordered_ids, path, step, scratch):
        if os.getpid() != parent:  # the child's first shard (this process writes others)
            step()
            os.kill(os.getpid(), signal.SIGKILL)  # the out-of-memory killer, say
        return real_write(selection, job, ordered_ids, path, step, scratch)

    monkeypatch.setattr(service, "_write_shard", write)
    export = export_build(export_id=export_create(project=built.project, queue=False, formats=["shards"],
                                                  min_shards=8).pk)
    assert spied["processes"] == [2]
    assert export.status == Export.Status.FAILED and export.files == []
    assert "WorkerDied" in export.error and "killed by SIGKILL" in export.error, export.error
    assert stored_under(export.storage_prefix) == []
    assert_children_gone(spied)


@pytest.mark.postgres_matrix
@pytest.mark.django_db(transaction=True)
def test_an_export_cancelled_while_processes_write_stops_them_and_publishes_nothing(settings, monkeypatch, spied):
    settings.EXPORT_PROGRESS_SECONDS = 0
    settings.EXPORT_PROCESSES = 2
    built = build_project(n_images=24)
    export = export_create(project=built.project, queue=False, formats=["shards"], min_shards=8)
    real_step = service._Progress.step
    calls = {"n": 0}

    def step(self, n=1):
        calls["n"] += 1
        if calls["n"] == 2:  # someone presses cancel while the processes write
            service.export_cancel(export=Export.objects.get(pk=export.pk))
        return real_step(self, n)

    monkeypatch.setattr(service._Progress, "step", step)
    export = export_build(export_id=export.pk)
    assert spied["processes"] == [2]
    assert export.status == Export.Status.CANCELLED and export.files == []
    assert stored_under(export.storage_prefix) == []
    assert_children_gone(spied)




@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_processes_read_images_from_s3_and_the_shards_are_the_same(s3_storage, settings, spied):
    s3, bucket = s3_storage
    built = build_project(n_images=12)  # its images go to the bucket
    exports = {}
    for processes in (1, 2):
        settings.EXPORT_PROCESSES = processes
        export = export_build(export_id=export_create(project=built.project, queue=False, formats=["shards"],
                                                      min_shards=4).pk)
        assert export.status == Export.Status.DONE, export.error
        exports[processes] = export
    assert spied["processes"] == [1, 2]
    assert exports[2].files == exports[1].files
    for entry in exports[2].files:
        body = s3.get_object(Bucket=bucket, Key=export_storage_name(export=exports[2], name=entry["name"]))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    assert_children_gone(spied)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_writes_shards_in_processes(celery_worker_factory, settings):
    """A prefork worker's processes are daemonic: the shard writers are forked all the same."""
    built = build_project(n_images=16)
    worker = celery_worker_factory(env={"EXPORT_PROCESSES": "2", "EXPORT_SAMPLES_PER_PROCESS": "1"}, concurrency=1)
    export = export_create(project=built.project, min_shards=4, formats=["coco", "shards"])
    deadline = time.monotonic() + 90
    while Export.objects.get(pk=export.pk).status not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, worker.output()[-3000:]
        time.sleep(0.2)
    export.refresh_from_db()
    assert export.status == Export.Status.DONE, (export.error, worker.output()[-3000:])
    assert "in 2 processes" in worker.output(), worker.output()[-3000:]
    settings.EXPORT_PROCESSES = 1
    here = export_build(export_id=export_create(project=built.project, queue=False, min_shards=4,
                                                formats=["coco", "shards"]).pk)
    assert here.files == export.files and contents(here) == contents(export)
    for e in (export, here):
        storage_remove_prefix(e.storage_prefix)


# --- The forked workers themselves -----------------------------------------------------------


def _slow_then_fast(index, report):
    report(1)
    time.sleep(0.2 if index % 3 == 0 else 0.0)  # results arrive out of order
    return {"index": index, "pid": os.getpid()}


def test_forked_workers_give_results_in_job_order_within_the_window():
    reports = []
    with ForkedWorkers(3, _slow_then_fast) as workers:
        results = list(workers.run(12, window=4, on_report=reports.append, on_idle=lambda: None, idle_seconds=0.05))
    assert [i for i, _ in results] == list(range(12)) and all(r["index"] == i for i, r in results)
    assert len({r["pid"] for _, r in results} - {os.getpid()}) >= 2  # written in the children
    assert sum(reports) == 12
    assert all(child.status == 0 for child in workers.children)


def _fail_on_five(index, report):
    if index == 5:
        raise OSError(28, "No space left on device", f"/tmp/shard-{index}")
    return index


def _die_on_two(index, report):
    if index == 2:
        os._exit(3)
    return index


def test_an_exception_in_a_child_is_raised_in_the_parent_with_its_traceback():
    with pytest.raises(OSError) as caught:
        with ForkedWorkers(2, _fail_on_five) as workers:
            list(workers.run(9, window=3, on_report=lambda n: None, on_idle=lambda: None, idle_seconds=0.05))
    assert caught.value.errno == 28 and caught.value.filename == "/tmp/shard-5"
    assert any("_fail_on_five" in note for note in caught.value.__notes__)
    assert all(child.status is not None for child in workers.children)


def test_a_child_that_dies_is_reported():
    with pytest.raises(WorkerDied, match="exit status 3"):
        with ForkedWorkers(2, _die_on_two) as workers:
            list(workers.run(6, window=3, on_report=lambda n: None, on_idle=lambda: None, idle_seconds=0.05))
    assert all(child.status is not None for child in workers.children)
