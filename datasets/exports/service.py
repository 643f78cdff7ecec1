"""Building, cancelling and reading exports. The Celery task in ``tasks`` calls ``export_build``.

An export is built in a private temporary folder and published file by file to Django's default
storage (local disk or S3) under a prefix no one else uses; the manifest goes last, and only then
does the row turn ``done`` and list its files. The API serves files of done exports only, so a
half-written export is never visible. Memory stays flat: images and annotations are read in
chunks, image bytes are streamed, and a shard is uploaded and deleted as soon as it is written.
Shards are written by forked processes, one per CPU (``EXPORT_PROCESSES``; see ``_write_shards``).
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage, storages
from django.db import IntegrityError, connections, transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django.utils.functional import empty

from datasets.exports import imagefolder, manifest as manifest_mod
from datasets.exports.coco import CocoWriter
from datasets.exports.processes import ForkedWorkers
from datasets.exports.selection import (
    COMPLETE_STAGES,
    SPLITS,
    Selection,
    image_extension,
    sample_key,
    shuffled,
)
from datasets.exports.shards import ShardFile, plan_shard_bounds
from datasets.exports.streams import local_paths, open_stream
from datasets.exports.tarwriter import TarScratch, TarWriter
from datasets.models import Export, Project

logger = logging.getLogger(__name__)

FORMATS = ("coco", "shards", "imagefolder")
LOADER_SOURCE = Path(__file__).resolve().parent.parent / "loader" / "annotator_loader.py"


class ExportCancelled(Exception):
    pass


class ExportSuperseded(Exception):
    """This build lost its lease: another worker started the export again."""


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


# --- Creating ------------------------------------------------------------------------------


def export_options_clean(
    *,
    project: Project,
    formats: list[str] | None = None,
    filters: dict[str, Any] | None = None,
    split_ratios: dict[str, float] | None = None,
    seed: int = 0,
    shard_size: int | None = None,
    min_shards: int | None = None,
) -> dict[str, Any]:
    """Check what an export is asked to contain; raise ValidationError naming what is wrong."""
    errors: dict[str, str] = {}
    formats = list(formats) if formats else ["coco", "shards"]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        errors["formats"] = f"Unknown format(s) {', '.join(map(str, bad))}; choose from {', '.join(FORMATS)}."
    formats = [f for f in FORMATS if f in formats]
    filters = dict(filters or {})
    unknown = set(filters) - {"complete_stages", "min_confidence", "categories"}
    if unknown:
        errors["filters"] = f"Unknown filter(s): {', '.join(sorted(unknown))}."
    stages = filters.get("complete_stages") or []
    if not isinstance(stages, list) or any(s not in COMPLETE_STAGES for s in stages):
        errors["filters.complete_stages"] = f"A list of stages among {', '.join(COMPLETE_STAGES)}."
    else:
        filters["complete_stages"] = [s for s in COMPLETE_STAGES if s in stages]
    mc = filters.get("min_confidence")
    if mc is not None and (isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0 <= mc <= 1):
        errors["filters.min_confidence"] = "A number from 0 to 1, or null."
    else:
        filters["min_confidence"] = None if mc is None else float(mc)
    cats = filters.get("categories") or []
    if not isinstance(cats, list) or any(isinstance(c, bool) or not isinstance(c, int) for c in cats):
        errors["filters.categories"] = "A list of category ids (COCO ids of this project)."
    else:
        known = set(project.categories.filter(coco_id__in=cats).values_list("coco_id", flat=True))
        missing = sorted(set(cats) - known)
        if missing:
            errors["filters.categories"] = f"No such category in this project: {', '.join(map(str, missing))}."
        filters["categories"] = sorted(set(cats))
    ratios = dict(split_ratios or {"train": 0.8, "val": 0.1, "test": 0.1})
    if set(ratios) - set(SPLITS) or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in ratios.values()
    ):
        errors["split_ratios"] = "Ratios for train, val and test: numbers of 0 or more."
    elif abs(sum(ratios.values()) - 1.0) > 1e-6:
        errors["split_ratios"] = f"The ratios must add up to 1, not {sum(ratios.values()):g}."
    else:
        ratios = {s: float(ratios.get(s, 0.0)) for s in SPLITS}
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        errors["seed"] = "A whole number from 0 to 2^63 - 1."
    shard_size = int(_setting("EXPORT_SHARD_SIZE", 512 * 1024 * 1024) if shard_size is None else shard_size)
    if shard_size < 1024:
        errors["shard_size"] = "At least 1024 bytes."
    min_shards = int(_setting("EXPORT_MIN_SHARDS", 8) if min_shards is None else min_shards)
    if not 1 <= min_shards <= 4096:
        errors["min_shards"] = "From 1 to 4096."
    if errors:
        raise ValidationError(errors)
    return {
        "formats": formats,
        "filters": filters,
        "split_ratios": ratios,
        "seed": seed,
        "shard_size": shard_size,
        "min_shards": min_shards,
    }


def export_create(*, project: Project, user=None, queue: bool = True, **options: Any) -> Export:
    """Number and save a new export of the project, then queue its build after the commit."""
    cleaned = export_options_clean(project=project, **options)
    for attempt in range(5):
        try:
            with transaction.atomic():
                last = Export.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0
                export = Export.objects.create(project=project, number=last + 1, created_by=user, **cleaned)
            break
        except IntegrityError:
            if attempt == 4:
                raise
    if queue:
        _queue_build_on_commit(export.pk)
    return export


def _queue_build_on_commit(export_id: int) -> None:
    """Queue the build once the row is committed. With the broker out of reach the export stays
    pending and the request still succeeds (a 503 would make the client create a second one):
    beat's ``export_recover`` queues pending exports that waited past the lease."""
    from datasets.exports.tasks import export_build_task

    def queue() -> None:
        try:
            export_build_task.delay(export_id)
        except Exception:  # noqa: BLE001 - kombu's OperationalError and friends: the broker is down
            logger.warning("export %s: the broker is out of reach; beat will queue it later", export_id,
                           exc_info=True)

    transaction.on_commit(queue)


def export_cancel(*, export: Export) -> Export:
    """Stop an export: a pending one at once, a running one at its next progress report."""
    if export.is_finished:
        raise ValidationError(f"Export {export.number} is already {export.status}.", code="finished")
    Export.objects.filter(pk=export.pk, status=Export.Status.PENDING).update(
        status=Export.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    )
    Export.objects.filter(pk=export.pk, status=Export.Status.RUNNING).update(cancel_requested=True)
    export.refresh_from_db()
    return export


# --- Building ------------------------------------------------------------------------------


class _Progress:
    """Progress reports, which also renew this build's lease and look for a cancel.

    Every write is conditional on the export still being this build's (its storage prefix): a
    build that lost its lease to a restart stops at its next report instead of racing the new one.
    """

    def __init__(self, export: Export, total: int) -> None:
        self.export = export
        self.total = total
        self.done = 0
        self.every = min(float(_setting("EXPORT_PROGRESS_SECONDS", 0.5)), _lease_seconds() / 4)
        self.last = time.monotonic()
        self._update(progress_total=total, progress_done=0)

    def _update(self, **fields: Any) -> None:
        mine = Export.objects.filter(pk=self.export.pk, status=Export.Status.RUNNING,
                                     storage_prefix=self.export.storage_prefix)
        fields["heartbeat_at"] = timezone.now()
        if not mine.update(**fields):
            raise ExportSuperseded()
        for name, value in fields.items():  # the build's copy of the row stays as written
            setattr(self.export, name, value)

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        self._update(progress_done=min(self.done, self.total))
        if Export.objects.filter(pk=self.export.pk, cancel_requested=True).exists():
            raise ExportCancelled()

    def beat(self) -> None:
        """Before a long step (publishing a file): renew the lease and look for a cancel if a
        report is due, as ``step`` does. Not every time: the lease is at most ``every`` seconds
        (a quarter of it at most) old anyway, and a report before each of a small export's
        shards cost a write and a read of the row each, a tenth of its time."""
        self.step(0)


class _FinishedFile(File):
    """A finished local file: a local storage moves it into place (a rename on the same disk)
    instead of copying it, as Django does with large uploads; S3 streams it up."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        super().__init__(f, name=path.name)
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


class _Publisher:
    """Uploads finished local files to the default storage under the export's prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.files: list[dict[str, Any]] = []
        self.stored: list[str] = []
        self.before_each: Callable[[], None] = lambda: None
        self._local = local_paths()  # name -> path when the storage is a plain local one
        self._folders: set[str] = set()  # local folders the storage made for this export

    def publish(self, name: str, path: Path, *, sha256: str | None = None, move: bool = True) -> dict[str, Any]:
        """Store a finished file; ``move`` lets a local storage take the file itself (never
        for a file that is not the export's own, such as the loader's source)."""
        if sha256 is None:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            sha256 = digest.hexdigest()
        target = f"{self.prefix}/{name}"
        size = path.stat().st_size
        self.before_each()
        if move and self._move_locally(path, target):
            saved = target
        else:
            with open(path, "rb") as f:
                saved = default_storage.save(target, _FinishedFile(f, path) if move else File(f, name=path.name))
            if self._local is not None:
                self._folders.add(os.path.dirname(self._local(saved)))
        self.stored.append(saved)
        if saved != target:
            raise RuntimeError(f"storage renamed {target} to {saved}; the export prefix is not private")
        entry = {"name": name, "size": size, "sha256": sha256}
        self.files.append(entry)
        return entry

    def _move_locally(self, path: Path, target: str) -> bool:
        """What saving a finished file to a plain local storage does, into a folder that an
        earlier file of this export had the storage make: the file takes the target name (a
        hard link, then the build's name goes) and the storage's file mode, without the
        storage's name checks, a quarter of a millisecond a file (the prefix is this build's
        own, and its names are ours). False when it cannot (another storage, a folder not made
        yet, another file system): then the storage saves it."""
        if self._local is None:
            return False
        dest = self._local(target)
        if os.path.dirname(dest) not in self._folders:
            return False
        try:
            os.link(path, dest)
        except FileExistsError:
            raise RuntimeError(f"{target} exists already; the export prefix is not private") from None
        except OSError:  # no hard links here, another file system: the storage's way
            return False
        os.unlink(path)
        mode = storages["default"].file_permissions_mode
        if mode is not None:
            os.chmod(dest, mode)
        return True

    def remove_all(self) -> None:
        """Delete what this build stored, including a file whose save failed half-way (a full
        disk leaves a partial file that ``stored`` never heard of)."""
        for name in self.stored:
            try:
                default_storage.delete(name)
            except Exception:  # noqa: BLE001 - cleaning up after a failure must not hide it
                logger.warning("could not delete %s after a failed export", name, exc_info=True)
        storage_remove_prefix(self.prefix)


def storage_remove_prefix(prefix: str) -> int:
    """Delete every file under ``prefix`` in the default storage; returns how many went."""
    if not prefix.startswith("exports/"):
        raise ValueError(f"refusing to delete outside exports/: {prefix!r}")
    removed = 0
    try:
        folders, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    except Exception:  # noqa: BLE001 - cleaning up must not hide the failure being cleaned up
        logger.warning("could not list %s to clean it up", prefix, exc_info=True)
        return 0
    for name in files:
        try:
            default_storage.delete(f"{prefix}/{name}")
            removed += 1
        except Exception:  # noqa: BLE001
            logger.warning("could not delete %s/%s", prefix, name, exc_info=True)
    for folder in folders:
        removed += storage_remove_prefix(f"{prefix}/{folder}")
    try:  # a local disk keeps the empty folders; S3 has none
        Path(default_storage.path(prefix)).rmdir()
    except (NotImplementedError, OSError):
        pass
    return removed


def _lease_seconds() -> float:
    return float(_setting("EXPORT_LEASE_SECONDS", 300))


def _failure_message(exc: BaseException) -> str:
    """What the requester reads on a failed export: plain words for a full disk."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return (
            f"The disk is full: no space left on the device while writing the export{where}. "
            "Nothing of this export was published. Free space on the disk of EXPORT_TMP_DIR or of the "
            f"media storage, then start a new export. [{type(exc).__name__}: {exc}]"
        )
    return f"{type(exc).__name__}: {exc}"


def _open_image(record: dict[str, Any]) -> BinaryIO:
    return open_stream(record["image"].file.name)


def _class_map(selection: Selection) -> list[dict[str, Any]]:
    return [
        {"id": c.coco_id, "index": i, "name": c.name, "supercategory": c.supercategory}
        for i, c in enumerate(selection.categories)
    ]


def _licenses(selection: Selection) -> tuple[list[dict[str, Any]], dict[str, int]]:
    names = (
        selection.images().exclude(license="").order_by("license").values_list("license", flat=True).distinct()
    )
    ids = {name: i for i, name in enumerate(names, start=1)}
    licenses = [{"id": 0, "name": "Unknown", "url": ""}] + [
        {"id": i, "name": name, "url": name if name.startswith(("http://", "https://")) else ""}
        for name, i in ids.items()
    ]
    return licenses, ids


def export_build(*, export_id: int, on_progress: Callable[[int, int], None] | None = None) -> Export | None:
    """Build a pending export. Returns quietly when the row is gone or no longer pending.

    Each build writes under a prefix of its own, which is also its claim on the row: every later
    write is conditional on it, so a build that lost its lease (see ``export_recover``) can
    neither publish nor fail the export that another build took over.
    """
    export = Export.objects.select_related("project").filter(pk=export_id).first()
    if export is None:
        return None
    prefix = f"exports/project-{export.project_id}/export-{export.number}-{uuid.uuid4().hex[:12]}"
    now = timezone.now()
    claimed = Export.objects.filter(pk=export_id, status=Export.Status.PENDING, cancel_requested=False).update(
        status=Export.Status.RUNNING, started_at=now, heartbeat_at=now, error="", storage_prefix=prefix,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return Export.objects.filter(pk=export_id).first()
    # The row as claimed: what the build reads of it (project, options, number) is fixed when the
    # export is created, and the claim's own fields are known.
    export.status, export.started_at, export.heartbeat_at = Export.Status.RUNNING, now, now
    export.error, export.storage_prefix, export.attempts = "", prefix, export.attempts + 1
    mine = Export.objects.filter(pk=export.pk, storage_prefix=prefix)
    tmp_root = Path(_setting("EXPORT_TMP_DIR", tempfile.gettempdir()))
    tmp_root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"export-{export.pk}-", dir=tmp_root))
    publisher = _Publisher(prefix)
    try:
        files, counts = _build(export, workdir, publisher)
    except ExportSuperseded:
        publisher.remove_all()
        logger.warning("export %s of project %s: lease lost, another build took over", export.number,
                       export.project_id)
    except ExportCancelled:
        publisher.remove_all()
        mine.update(status=Export.Status.CANCELLED, finished_at=timezone.now())
        logger.info("export %s of project %s cancelled", export.number, export.project_id)
    except Exception as exc:  # noqa: BLE001 - recorded on the row for the requester to read
        publisher.remove_all()
        logger.exception("export %s of project %s failed", export.number, export.project_id)
        mine.update(status=Export.Status.FAILED, error=_failure_message(exc)[:5000], finished_at=timezone.now())
    else:
        finished = timezone.now()
        done = mine.filter(status=Export.Status.RUNNING, cancel_requested=False).update(
            status=Export.Status.DONE, files=files, counts=counts, finished_at=finished,
            progress_done=F("progress_total"),
        )
        if done:  # the row as just written (``_Progress`` kept the rest of it up to date)
            export.status, export.files, export.counts, export.finished_at = Export.Status.DONE, files, counts, finished
            export.progress_done = export.progress_total
            return export
        # Cancelled, or taken over, between the last progress report and now.
        publisher.remove_all()
        mine.filter(status=Export.Status.RUNNING).update(status=Export.Status.CANCELLED, finished_at=timezone.now())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return Export.objects.filter(pk=export_id).first()


def export_recover(*, now=None) -> dict[str, int]:
    """Start again the running exports whose worker stopped renewing its lease (killed, lost
    machine, out of memory): what the half-done build stored is deleted and the export goes back
    to pending and is queued. After ``EXPORT_MAX_ATTEMPTS`` builds it fails with a message
    instead, so an export that kills its worker every time does not loop forever. Pending
    exports that waited longer than the lease (their message lost with a broker outage) are
    queued again, at most once per lease; a second message is harmless, as only one build can
    claim the row. Run by beat.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=_lease_seconds())
    max_attempts = int(_setting("EXPORT_MAX_ATTEMPTS", 3))
    done = {"restarted": 0, "failed": 0, "cancelled": 0, "requeued": 0}
    waiting = Export.objects.filter(status=Export.Status.PENDING, cancel_requested=False, created_at__lt=cutoff).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))
    for pk, beat in list(waiting.values_list("pk", "heartbeat_at")):
        if Export.objects.filter(pk=pk, status=Export.Status.PENDING, heartbeat_at=beat).update(heartbeat_at=now):
            _queue_build_on_commit(pk)
            done["requeued"] += 1
    stale = Export.objects.filter(status=Export.Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    ).values_list("pk", "storage_prefix", "heartbeat_at", "attempts", "cancel_requested")
    for pk, prefix, beat, attempts, cancel in list(stale):
        same = Export.objects.filter(pk=pk, status=Export.Status.RUNNING, storage_prefix=prefix, heartbeat_at=beat)
        if cancel:
            changed = same.update(status=Export.Status.CANCELLED, finished_at=now)
            key = "cancelled"
        elif attempts >= max_attempts:
            changed = same.update(
                status=Export.Status.FAILED, finished_at=now,
                error=f"The worker building this export stopped {attempts} times without finishing (killed, "
                      "lost, or out of memory); giving up. Start a new export once the workers are healthy.",
            )
            key = "failed"
        else:
            changed = same.update(status=Export.Status.PENDING, storage_prefix="", heartbeat_at=now,
                                  started_at=None, progress_done=0)
            key = "restarted"
        if not changed:
            continue  # renewed, or taken, since it was read
        if prefix:
            storage_remove_prefix(prefix)
        done[key] += 1
        if key == "restarted":
            logger.warning("export %s: its worker stopped (no lease renewal since %s); building it again", pk, beat)
            _queue_build_on_commit(pk)
    return done


def _build(export: Export, workdir: Path, publisher: _Publisher) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    project = export.project
    selection = Selection(project=project, filters=export.filters, ratios=export.split_ratios)
    ids, sizes, split_codes = selection.image_index()
    code_of = {split: code for code, split in enumerate(SPLITS)}
    formats = export.formats
    passes = int("coco" in formats or "imagefolder" in formats) + int("shards" in formats)
    progress = _Progress(export, total=len(ids) * passes + 1)
    publisher.before_each = progress.beat
    class_map = _class_map(selection)
    splits: dict[str, dict[str, Any]] = {s: {"images": split_codes.count(code_of[s])} for s in SPLITS}

    if "coco" in formats or "imagefolder" in formats:
        _write_by_id(export, selection, workdir, publisher, progress, ids, split_codes, splits, class_map)
    if "shards" in formats:
        codes = np.frombuffer(split_codes, dtype=np.int8)
        orders: dict[str, np.ndarray] = {}
        jobs: list[_ShardJob] = []
        for split in SPLITS:
            mine = codes == code_of[split]
            orders[split], ordered_sizes = shuffled(np.frombuffer(ids, dtype=np.int64)[mine],
                                                    np.frombuffer(sizes, dtype=np.int64)[mine], export.seed)
            plan = plan_shard_bounds(ordered_sizes, shard_size=export.shard_size, min_shards=export.min_shards)
            jobs += [_ShardJob(split, number, start, end) for number, (start, end) in enumerate(plan)]
            splits[split]["shards"] = []
            del mine, ordered_sizes
        for job, entry in _write_shards(selection, workdir, publisher, progress, jobs, orders):
            splits[job.split]["shards"].append(entry)
        del orders

    publisher.publish(manifest_mod.LOADER_NAME, LOADER_SOURCE, move=False)
    manifest = manifest_mod.build_manifest(
        project={"id": project.pk, "name": project.name},
        formats=formats,
        filters=export.filters,
        split_ratios=export.split_ratios,
        seed=export.seed,
        shard_size=export.shard_size,
        min_shards=export.min_shards,
        class_map=class_map,
        splits=splits,
        files=list(publisher.files),
    )
    path = workdir / manifest_mod.MANIFEST_NAME
    path.write_bytes(manifest_mod.manifest_bytes(manifest))
    # Counted, and reported if a report is due; a cancel from now on is caught by the final
    # update, which only marks the export done if none was asked for.
    progress.step()
    publisher.publish(manifest_mod.MANIFEST_NAME, path)
    counts = {s: {k: v for k, v in splits[s].items() if k != "shards"} for s in SPLITS}
    return publisher.files, counts


def _write_by_id(export, selection, workdir, publisher, progress, ids, split_codes, splits, class_map) -> None:
    """One pass over the images in id order: COCO JSON and ImageFolder tars."""
    formats = export.formats
    licenses, license_ids = _licenses(selection)
    coco = None
    if "coco" in formats:
        coco = CocoWriter(
            workdir=workdir,
            info={
                "description": f"{export.project.name}",
                "version": "annotator-export-1",
                "contributor": "Annotator",
                "seed": export.seed,
                "split_ratios": export.split_ratios,
            },
            licenses=licenses,
            categories=[{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]} for c in class_map],
        )
    folders: dict[str, tuple[Path, BinaryIO, TarWriter]] = {}
    skipped = {s: 0 for s in SPLITS}
    kept = {s: 0 for s in SPLITS}
    if "imagefolder" in formats:
        for split in SPLITS:
            path = workdir / f"imagefolder-{split}.tar"
            f = open(path, "wb")
            folders[split] = (path, f, TarWriter(f))
    names = {c["id"]: imagefolder.class_folder(c["name"]) for c in class_map}
    try:
        for (pk, record), code in zip(selection.ordered_records(ids), split_codes):
            split = SPLITS[code]
            key = sample_key(pk)
            ext = image_extension(record["image"])
            if coco is not None:
                coco.add(split, record, key=key, ext=ext, license_ids=license_ids)
            if folders:
                label = imagefolder.single_label(record)
                if label is None:
                    skipped[split] += 1
                else:
                    with _open_image(record) as src:
                        folders[split][2].add_stream(f"{names[label]}/{key}.{ext}", src, record["image"].file_size)
                    kept[split] += 1
            progress.step()
        if coco is not None:
            for split, path in coco.finish().items():
                entry = publisher.publish(f"coco/{split}.json", path)
                splits[split]["coco"] = {**entry, **coco.counts[split]}
                path.unlink(missing_ok=True)
        for split, (path, f, writer) in folders.items():
            writer.close()
            f.close()
            entry = publisher.publish(f"imagefolder/{split}.tar", path, sha256=writer.sha256.hexdigest())
            splits[split]["imagefolder"] = {**entry, "samples": kept[split], "skipped": skipped[split]}
            path.unlink(missing_ok=True)
    finally:
        if coco is not None:
            coco.close()
        for _, f, _ in folders.values():
            f.close()


@dataclass(frozen=True)
class _ShardJob:
    """One shard of a split: samples ``start`` to ``end`` of the split's shard order."""

    split: str
    number: int
    start: int
    end: int

    @property
    def name(self) -> str:
        return f"shards/{self.split}-{self.number:06d}.tar"

    @property
    def file_name(self) -> str:
        return f"{self.split}-{self.number:06d}.tar"


class _Closing:
    """A shard whose last bytes the writer thread may still be writing (``_write_shard`` with
    ``wait=False``): ``ready()`` once they are in, ``finish()`` waits for them, closes the file
    and gives the shard's manifest entry."""

    def __init__(self, f: BinaryIO, shard: ShardFile, last: Future | None) -> None:
        self.f, self.shard, self.last = f, shard, last

    def ready(self) -> bool:
        return self.last is None or self.last.done()

    def finish(self) -> dict[str, Any]:
        try:
            if self.last is not None:
                self.last.result()  # raises a failed write
        finally:
            self.f.close()
        return self.shard.entry()


def _write_shard(selection: Selection, job: _ShardJob, ordered_ids: np.ndarray, path: Path,
                 step: Callable[[], None], scratch: TarScratch, *, wait: bool = True,
                 records: Iterator[tuple[int, dict[str, Any]]] | None = None) -> dict[str, Any] | _Closing:
    """Write one shard to the local file ``path``; returns its manifest entry (sha256 included).

    ``records``: the shard's samples (``Selection.ordered_records``), if the caller reads them
    itself. With ``wait=False``, returns a ``_Closing`` as soon as the last bytes are handed to
    the scratch's writer thread, so that the next shard starts while they are written."""
    local = local_paths()  # image files read straight from the disk when the storage is local
    if records is None:
        records = selection.ordered_records(map(int, ordered_ids[job.start:job.end]), instances_json=True)
    f = open(path, "wb")
    try:
        shard = ShardFile(name=job.name, writer=TarWriter(f, scratch=scratch))
        for _, record in records:
            image = record["image"]
            if local is not None:
                shard.add_file(key=sample_key(image.pk), ext=image_extension(image), record=record,
                               path=local(image.file.name))
            else:
                with _open_image(record) as src:
                    shard.add(key=sample_key(image.pk), ext=image_extension(image), record=record, image=src)
            step()
        last = shard.writer.close(wait=wait)
    except BaseException:
        f.close()
        raise
    if wait:
        f.close()
        return shard.entry()
    return _Closing(f, shard, last)


# Samples each process writing shards is to have at least (``EXPORT_SAMPLES_PER_PROCESS``): a
# second process costs 20-25 ms (the fork of the worker's memory, the child's own database
# connection and first shard, its exit), which a small export does not win back. On two
# cores (2026-12-04, load 1.6-2.2, best of 8-10): 1,000 images 85 ms in one process against
# 104 in two, 2,000 images 171 against 172, 4,000 images 340 against 281.
SAMPLES_PER_PROCESS = 1000


def export_processes(*, shards: int, samples: int | None = None) -> int:
    """How many processes write an export's shards: ``EXPORT_PROCESSES`` (0, the default: one
    per CPU this process may run on) at most, one per shard at most, and with ``samples`` one
    per ``EXPORT_SAMPLES_PER_PROCESS`` samples at most (so an export of fewer than twice that
    many is written in one process). 1 writes them in this process, as does a build inside a
    transaction (other processes would not see its uncommitted rows) or on a system without
    ``fork``."""
    wanted = int(_setting("EXPORT_PROCESSES", 0))
    if wanted <= 0:
        wanted = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not hasattr(os, "fork") or any(conn.in_atomic_block for conn in connections.all(initialized_only=True)):
        return 1
    if samples is not None:
        wanted = min(wanted, samples // max(1, int(_setting("EXPORT_SAMPLES_PER_PROCESS", SAMPLES_PER_PROCESS))))
    return max(1, min(wanted, shards))


def _write_shards(selection: Selection, workdir: Path, publisher: _Publisher, progress: _Progress,
                  jobs: list[_ShardJob], orders: dict[str, np.ndarray]) -> Iterator[tuple[_ShardJob, dict[str, Any]]]:
    """Write and publish the shards, in ``jobs`` order; yields each job with its manifest entry.

    With more than one process (``export_processes``) the shards are written by this process
    and forked child processes, each a whole shard at a time to the build folder; this process
    publishes them in order as they finish, reports progress and looks for a cancel meanwhile
    (between its own samples while it writes a shard). The bytes are the
    same either way: a shard's content depends only on the plan, fixed before the fork.
    """
    processes = export_processes(shards=len(jobs), samples=sum(job.end - job.start for job in jobs))
    logger.info("export: writing %d shards in %s", len(jobs),
                "this process" if processes <= 1 else f"{processes} processes")
    if processes <= 1:
        # A shard's last bytes are written and hashed while the next shard starts; it is
        # published at the first of the next shard's samples that finds them written. A split's
        # samples are read 256 at a time across its shards (four queries a chunk, not a shard).
        closing: list[tuple[_ShardJob, Path, _Closing]] = []
        finished: list[tuple[_ShardJob, dict[str, Any]]] = []
        streams: dict[str, tuple[Iterator[tuple[int, dict[str, Any]]], list[int]]] = {}

        def publish_closing() -> None:
            while closing:
                job, path, shard = closing.pop()
                entry = shard.finish()
                publisher.publish(job.name, path, sha256=entry["sha256"])
                path.unlink(missing_ok=True)
                finished.append((job, entry))

        def step() -> None:
            progress.step()
            if closing and closing[0][2].ready():
                publish_closing()

        def records_of(job: _ShardJob) -> Iterator[tuple[int, dict[str, Any]]] | None:
            if job.split not in streams:
                streams[job.split] = (selection.ordered_records(map(int, orders[job.split]), instances_json=True), [0])
            stream, read = streams[job.split]
            if read[0] != job.start:  # not the split's next samples (never, with a plan's shards)
                return None
            read[0] = job.end
            if job.end == len(orders[job.split]):  # the split's last shard: its chunk goes with it
                del streams[job.split]
            return itertools.islice(stream, job.end - job.start)

        with TarScratch() as scratch:
            try:
                for job in jobs:
                    path = workdir / job.file_name
                    shard = _write_shard(selection, job, orders[job.split], path, step, scratch, wait=False,
                                         records=records_of(job))
                    publish_closing()  # the previous shard, if no sample of this one found it written
                    closing.append((job, path, shard))
                    yield from finished
                    finished.clear()
                publish_closing()
                yield from finished
            finally:
                for _, _, shard in closing:  # stopped early: close the last shard's file
                    try:
                        shard.finish()
                    except Exception:  # noqa: BLE001 - the error that stopped the build is the one to see
                        pass
        return

    report_every = 64  # samples between a child's progress reports, and between looks at the children
    scratch: list[TarScratch] = []  # each process's own, made there on its first shard

    def work(index: int, report: Callable[[int], None]) -> dict[str, Any]:
        """A shard in a child process."""
        job = jobs[index]
        if not scratch:
            scratch.append(TarScratch())
        done = 0

        def step() -> None:
            nonlocal done
            done += 1
            if done == report_every:
                report(done)
                done = 0

        entry = _write_shard(selection, job, orders[job.split], workdir / job.file_name, step, scratch[0])
        if done:
            report(done)
        return entry

    def local(index: int, poll: Callable[[], None]) -> dict[str, Any]:
        """A shard in this process, looking after the children every ``report_every`` samples."""
        job = jobs[index]
        if not scratch:
            scratch.append(TarScratch())
        done = 0

        def step() -> None:
            nonlocal done
            progress.step()
            done += 1
            if done == report_every:
                poll()
                done = 0

        return _write_shard(selection, job, orders[job.split], workdir / job.file_name, step, scratch[0])

    selection.prepare()  # compile the queries once, here, rather than in every child
    connections.close_all()  # each child opens its own; this process reopens its own when needed
    try:
        # This process writes shards too: one child fewer to fork, warm up and tear down.
        with ForkedWorkers(processes - 1, work, in_child=_in_shard_process) as workers:
            for index, entry in workers.run(len(jobs), window=processes + 1, on_report=progress.step,
                                            on_idle=lambda: progress.step(0),
                                            idle_seconds=max(0.05, progress.every), local=local):
                job = jobs[index]
                path = workdir / job.file_name
                publisher.publish(job.name, path, sha256=entry["sha256"])
                path.unlink(missing_ok=True)
                yield job, entry
    finally:
        if scratch:  # this process's writer thread (children never come back here)
            scratch[0].close()


def _in_shard_process() -> None:
    """In a forked shard writer: nothing of the parent's database connections or storage
    clients (an S3 client's pooled sockets) is used; fresh ones are made on first use."""
    for conn in connections.all(initialized_only=True):
        conn.connection = None  # the parent closed it before forking; never close a shared socket
    storages._storages = {}  # noqa: SLF001 - Django's storage cache, rebuilt from settings
    default_storage._wrapped = empty  # noqa: SLF001


# --- Reading -------------------------------------------------------------------------------


def export_storage_name(*, export: Export, name: str) -> str:
    return f"{export.storage_prefix}/{name}"


def export_manifest(*, export: Export) -> dict[str, Any]:
    import json

    with default_storage.open(export_storage_name(export=export, name=manifest_mod.MANIFEST_NAME), "rb") as f:
        return json.loads(f.read())
