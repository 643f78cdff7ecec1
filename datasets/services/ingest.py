"""Image ingestion: every way images enter a project goes through ``images_import``.

Sources (``datasets.services.ingest_sources``) yield candidate files one at a time. Each file is
read once into a bounded spool (or read in place when it is already a local file), hashed with
SHA-256, and checked by Pillow: the format must be JPEG, PNG or WebP, the pixel count read from
the header must be within ``INGEST_MAX_IMAGE_PIXELS`` *before* anything is decoded, then
``verify()`` and a full decode catch damaged and truncated files. The original bytes are stored
unchanged; width and height are recorded as displayed, after the EXIF orientation.

A file is imported whole or not at all: the stored file is written first, the row is created in
its own transaction, and the file is deleted again if the row cannot be made. A file whose bytes
are already in the project is reported as a duplicate (the unique constraint on
``(project, sha256)`` settles races). One bad file never stops the others. Counters and the
report of the ``ImageImport`` are written in batches.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import JSONField, Value
from django.db.models.functions import Cast
from django.utils import timezone
from PIL import Image as PILImage
from PIL import JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401 (registers the three)

from datasets.models import Image, ImageImport, Project
from datasets.services.ingest_sources import (
    Candidate,
    Refused,
    Source,
    SourceError,
    archive_kind,
    parse_url_list,
    source_archive,
    source_urls,
)

logger = logging.getLogger(__name__)

# Pillow format name -> extension of the stored file.
ACCEPTED_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
_OPENERS = ("JPEG", "PNG", "WEBP")
SPOOL_IN_MEMORY = 8 * 1024 * 1024  # smaller files stay in memory while checked, larger go to disk
REPORT_BATCH = 500  # write counters and report after this many files...
REPORT_SECONDS = 5.0  # ...or this many seconds, whichever comes first
ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Inspection:
    format: str  # JPEG, PNG or WEBP
    extension: str
    width: int  # as displayed, after EXIF orientation
    height: int
    exif_orientation: int


def report_message(entry: dict[str, Any]) -> str:
    """One report line as people read it: ``cat.jpg: not an image (cannot identify image file)``."""
    if entry["status"] == "failed":
        return f"{entry['name']}: {entry['reason']}"
    if entry["status"] == "duplicate":
        return f"{entry['name']}: {entry['reason'] or 'duplicate'}"
    return f"{entry['name']}: imported"


# --- Checking one image --------------------------------------------------------------------


def _sniff_other_format(fp: BinaryIO) -> str | None:
    """The name of a format we refuse, when the bytes are recognisably one."""
    fp.seek(0)
    head = fp.read(512)
    stripped = head.lstrip().lower()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "SVG"
    fp.seek(0)
    try:
        with PILImage.open(fp) as other:
            return other.format or "this"
    except PILImage.DecompressionBombError:
        return "this"
    except Exception:
        return None


def image_inspect(*, fp: BinaryIO, max_pixels: int | None = None) -> Inspection:
    """Check that ``fp`` holds one whole JPEG, PNG or WebP image within the limits.

    Raises Refused with the reason. The pixel count is taken from the header and refused before
    any pixel is decoded, so a small file claiming 50,000 x 50,000 pixels costs nothing.
    """
    max_pixels = settings.INGEST_MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    fp = _KeepOpen(fp)  # Pillow closes the files it is given; the caller still needs this one
    fp.seek(0)
    prefix = fp.read(16)
    if not prefix:
        raise Refused("an empty file")
    factory = None
    fmt = ""
    for name in _OPENERS:
        candidate_factory, accept = PILImage.OPEN[name]
        accepted = accept(prefix) if accept is not None else True
        if accepted and not isinstance(accepted, str):
            factory, fmt = candidate_factory, name
            break
    if factory is None:
        other = _sniff_other_format(fp)
        if other:
            raise Refused(f"{other} images are not accepted (only JPEG, PNG and WebP)")
        raise Refused("not an image (cannot identify image file)")
    # The plugin's constructor reads only the header. Pillow's own decompression-bomb check lives
    # in Image.open, which we do not call: ours, from settings, comes next.
    try:
        fp.seek(0)
        im = factory(fp, "")
    except Exception as exc:  # SyntaxError, struct.error, OSError... from a damaged header
        raise Refused(f"a damaged or truncated {_format_label(fmt)} file ({_plain(exc)})") from None
    fmt_name = _format_label(im.format or fmt)
    width, height = im.size
    pixels = width * height
    if width <= 0 or height <= 0:
        raise Refused(f"the {fmt_name} header gives no size ({width}x{height})")
    if pixels > max_pixels:
        raise Refused(f"{pixels:,} pixels is over the limit of {max_pixels:,} ({width}x{height})")
    try:
        im.verify()
    except Exception as exc:
        raise Refused(f"a damaged {fmt_name} file ({_plain(exc)})") from None
    try:
        fp.seek(0)
        im = factory(fp, "")
        im.load()  # a full decode: a truncated or corrupt file fails here
        exif = im.getexif()
        orientation = exif.get(ORIENTATION_TAG, 1)
    except Exception as exc:
        raise Refused(f"a damaged or truncated {fmt_name} file ({_plain(exc)})") from None
    finally:
        im.close()
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    if orientation in (5, 6, 7, 8):  # rotated a quarter turn: displayed with sides swapped
        width, height = height, width
    fmt_key = "JPEG" if (im.format or fmt) == "MPO" else (im.format or fmt)
    return Inspection(fmt_key, ACCEPTED_FORMATS[fmt_key], width, height, orientation)


class _KeepOpen:
    """A view of a binary file whose close() does nothing."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp

    def read(self, n: int = -1) -> bytes:
        return self._fp.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()

    def close(self) -> None:
        pass

    def __getattr__(self, name: str):  # readline, readinto... for the plugins that use them
        return getattr(self._fp, name)


def _format_label(fmt: str) -> str:
    return {"WEBP": "WebP", "MPO": "JPEG"}.get(fmt, fmt)


def _plain(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, struct.error):
        text = f"bad header data: {text}"
    return text[:300]


# --- Reading one candidate ---------------------------------------------------------------------


def _copy_limited(src, out: BinaryIO, hasher, max_bytes: int) -> int:
    size = 0
    while True:
        chunk = src.read(1024 * 1024)
        if not chunk:
            return size
        size += len(chunk)
        if size > max_bytes:
            raise Refused(f"more than the limit of {max_bytes:,} bytes")
        hasher.update(chunk)
        out.write(chunk)


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()


class _Opened:
    """The bytes of one candidate as a seekable file, with size and SHA-256."""

    def __init__(self, candidate: Candidate, max_bytes: int) -> None:
        self.candidate = candidate
        self.max_bytes = max_bytes
        self.fp: BinaryIO | None = None
        self.size = 0
        self.sha256 = ""

    def __enter__(self) -> "_Opened":
        c = self.candidate
        if c.size is not None and c.size > self.max_bytes:
            raise Refused(f"{c.size:,} bytes is over the limit of {self.max_bytes:,} bytes")
        if c.path is not None:
            self.size = c.path.stat().st_size
            if self.size > self.max_bytes:
                raise Refused(f"{self.size:,} bytes is over the limit of {self.max_bytes:,} bytes")
            self.sha256 = file_sha256(c.path)
            self.fp = c.path.open("rb")
            return self
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        self.fp = spool
        try:
            if c.fetch is not None:
                c.fetch(spool, self.max_bytes)
                spool.seek(0)
                hasher = hashlib.sha256()
                while chunk := spool.read(1024 * 1024):
                    hasher.update(chunk)
                self.size = spool.tell()
                self.sha256 = hasher.hexdigest()
            elif c.stream is not None:
                hasher = hashlib.sha256()
                src = c.stream()
                try:
                    self.size = _copy_limited(src, spool, hasher, self.max_bytes)
                except Refused:
                    raise
                except Exception as exc:  # a damaged archive member, a dropped S3 stream...
                    raise Refused(f"cannot be read ({_plain(exc)})") from None
                finally:
                    src.close()
                self.sha256 = hasher.hexdigest()
            else:
                raise Refused("nothing to read")
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fp is not None:
            self.fp.close()


# --- One file into the project -------------------------------------------------------------


def _entry(name: str, status: str, reason: str = "", image: int | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "reason": reason, "image": image}


def image_ingest(
    *,
    project: Project,
    candidate: Candidate,
    image_import: ImageImport | None = None,
    license: str = "",
    attribution: str = "",
) -> dict[str, Any]:
    """Import one candidate file into ``project``; return its report entry, never raise for it."""
    name = candidate.name
    if candidate.refusal:
        return _entry(name, "failed", candidate.refusal)
    try:
        with _Opened(candidate, settings.INGEST_MAX_FILE_BYTES) as opened:
            if opened.size == 0:
                raise Refused("an empty file")
            existing = Image.objects.filter(project=project, sha256=opened.sha256).values_list("pk", "original_name").first()
            if existing:
                return _duplicate(name, existing)
            info = image_inspect(fp=opened.fp)
            image = Image(
                project=project,
                width=info.width,
                height=info.height,
                exif_orientation=info.exif_orientation,
                format=info.format,
                file_size=opened.size,
                sha256=opened.sha256,
                original_name=candidate.original_name[:500],
                source_url=candidate.source_url[:2000],
                license=(candidate.license if candidate.license is not None else license)[:200],
                attribution=(candidate.attribution if candidate.attribution is not None else attribution)[:500],
                imported_by=image_import,
            )
            opened.fp.seek(0)
            return _store(image=image, fp=opened.fp, extension=info.extension, name=name)
    except Refused as exc:
        return _entry(name, "failed", str(exc))
    except OSError as exc:
        return _entry(name, "failed", f"cannot be read ({exc.strerror or exc})")
    except (OperationalError, InterfaceError):
        raise  # the database itself is gone: stop the import, a retry runs it again
    except Exception as exc:  # a database or storage error on this one file: the others go on
        logger.exception("image import: %s could not be saved", name)
        return _entry(name, "failed", f"could not be saved ({type(exc).__name__}: {_plain(exc)})")


def _duplicate(name: str, existing: tuple[int, str]) -> dict[str, Any]:
    pk, original = existing
    return _entry(name, "duplicate", f"already in the project as image #{pk} ({original})", pk)


def _store(*, image: Image, fp: BinaryIO, extension: str, name: str) -> dict[str, Any]:
    """Write the file, then the row; if the row cannot be made, delete the file again."""
    try:
        image.file.save(f"{image.sha256}.{extension}", File(fp), save=False)
    except OSError as exc:
        return _entry(name, "failed", f"could not be stored ({exc.strerror or exc})")
    stored = image.file.name
    try:
        with transaction.atomic():
            image.save()
    except IntegrityError:
        image.file.storage.delete(stored)
        existing = Image.objects.filter(project=image.project_id, sha256=image.sha256).values_list("pk", "original_name").first()
        if existing:
            return _duplicate(name, existing)
        raise
    except BaseException:
        image.file.storage.delete(stored)
        raise
    return _entry(name, "imported", "", image.pk)


# --- A whole import ------------------------------------------------------------------------


class _Run:
    """Counters and report of one ImageImport, written to the database in batches.

    The report is kept as one JSON text per line (about 100 bytes a file, not a few hundred
    for a dict) and written as JSON text, so a big import's memory is little more than that.
    """

    def __init__(self, image_import: ImageImport) -> None:
        self.image_import = image_import
        self.lines: list[str] = []
        self.counts = {"imported": 0, "duplicate": 0, "failed": 0}
        self.unsaved = 0
        self.last_flush = time.monotonic()

    def add(self, entry: dict[str, Any], *, flush: bool = True) -> None:
        self.lines.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
        self.counts[entry["status"]] += 1
        self.unsaved += 1
        if flush and (self.unsaved >= REPORT_BATCH or time.monotonic() - self.last_flush >= REPORT_SECONDS):
            self.flush()

    def flush(self, **extra: Any) -> None:
        values = {
            "total": len(self.lines),
            "imported": self.counts["imported"],
            "duplicates": self.counts["duplicate"],
            "failed": self.counts["failed"],
            **extra,
        }
        report = Cast(Value("[" + ",".join(self.lines) + "]"), output_field=JSONField())
        ImageImport.objects.filter(pk=self.image_import.pk).update(report=report, **values)
        self.unsaved = 0
        self.last_flush = time.monotonic()

    def result(self) -> ImageImport:
        """The ImageImport as written; its report loads from the database when first read."""
        return ImageImport.objects.select_related("project").defer("report").get(pk=self.image_import.pk)


def image_import_create(
    *, project: Project, source: str, source_detail: str = "", created_by=None
) -> ImageImport:
    return ImageImport.objects.create(
        project=project, source=source, source_detail=source_detail[:1000],
        created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
    )


def images_import(
    *,
    project: Project,
    source: Source,
    created_by=None,
    license: str = "",
    attribution: str = "",
    image_import: ImageImport | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> ImageImport:
    """Import every file of ``source`` into ``project`` and return the finished ImageImport.

    The ImageImport ends ``done`` (with a report line per file) or, when the source could not be
    read at all, ``failed`` with ``error`` saying why. Files read before a source broke off stay
    imported, and the break is the last line of the report.
    """
    if image_import is None:
        image_import = image_import_create(
            project=project, source=source.kind, source_detail=source.detail, created_by=created_by
        )
    run = _Run(image_import)
    run.flush(status=ImageImport.Status.RUNNING, error="", finished_at=None)
    try:
        for candidate in source.items():
            entry = image_ingest(
                project=project, candidate=candidate, image_import=image_import,
                license=license, attribution=attribution,
            )
            run.add(entry)
            if progress is not None:
                progress(entry)
    except SourceError as exc:
        message = str(exc)
        logger.warning("image import %s: %s", image_import.pk, message)
        if run.lines:
            run.add(_entry(source.detail or "source", "failed", message), flush=False)
            run.flush(status=ImageImport.Status.DONE, error=message, finished_at=timezone.now())
        else:
            run.flush(status=ImageImport.Status.FAILED, error=message, finished_at=timezone.now())
        return run.result()
    except (OperationalError, InterfaceError):
        # The database went away: nothing can be recorded now. The import stays 'running' so a
        # retry of the task runs it again (what is already in comes back as duplicates).
        raise
    except BaseException as exc:
        run.flush(status=ImageImport.Status.FAILED, error=f"stopped by an error: {exc!r}"[:5000], finished_at=timezone.now())
        raise
    run.flush(status=ImageImport.Status.DONE, finished_at=timezone.now())
    return run.result()


# --- Imports staged for a Celery worker ------------------------------------------------------


def _staging_dir(image_import: ImageImport) -> str:
    return f"imports/{image_import.pk}"


def image_import_stage(
    *,
    project: Project,
    created_by=None,
    archive=None,
    urls_text: str | None = None,
    license: str = "",
    attribution: str = "",
) -> ImageImport:
    """Keep an uploaded archive or a URL list in storage for a worker; return the pending import.

    The caller queues ``datasets.tasks.image_import_run`` for it once the transaction commits.
    """
    if (archive is None) == (urls_text is None):
        raise ValueError("stage exactly one of an archive or a URL list")
    if archive is not None:
        image_import = image_import_create(
            project=project, source=ImageImport.Source.ARCHIVE,
            source_detail=f"{Path(archive.name).name} (uploaded)", created_by=created_by,
        )
        base = _staging_dir(image_import)
        stored = default_storage.save(f"{base}/archive{_archive_suffix(archive.name)}", archive)
        manifest = {"kind": "archive", "file": stored, "name": Path(archive.name).name}
    else:
        urls = parse_url_list(urls_text or "")
        image_import = image_import_create(
            project=project, source=ImageImport.Source.URLS,
            source_detail=f"{len(urls)} URL(s)", created_by=created_by,
        )
        base = _staging_dir(image_import)
        manifest = {"kind": "urls", "urls": urls}
    manifest.update(license=license, attribution=attribution)
    from django.core.files.base import ContentFile

    default_storage.save(f"{base}/manifest.json", ContentFile(json.dumps(manifest).encode()))
    return image_import


def _archive_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip"):
        if lower.endswith(suffix):
            return suffix
    return ".bin"


def image_import_run_staged(*, image_import: ImageImport) -> ImageImport:
    """Run an import staged by ``image_import_stage`` (what the Celery task calls).

    Runs only a pending import (or one a lost worker or a database error left running); a
    finished one is returned as it is, so a task delivered twice does no harm. The staged files
    are deleted once the import is finished (done or failed), not when it broke off.
    """
    if image_import.status in (ImageImport.Status.DONE, ImageImport.Status.FAILED):
        return image_import
    base = _staging_dir(image_import)
    manifest_name = f"{base}/manifest.json"
    if not default_storage.exists(manifest_name):
        ImageImport.objects.filter(pk=image_import.pk).update(
            status=ImageImport.Status.FAILED, error="the staged files of this import are gone", finished_at=timezone.now()
        )
        image_import.refresh_from_db()
        return image_import
    with default_storage.open(manifest_name, "rb") as f:
        manifest = json.loads(f.read().decode())
    project = image_import.project
    options = {"license": manifest.get("license", ""), "attribution": manifest.get("attribution", "")}
    if manifest["kind"] == "urls":
        source = source_urls(manifest["urls"], detail=image_import.source_detail)
        result = images_import(project=project, source=source, image_import=image_import, **options)
    else:
        with _local_copy(manifest["file"]) as path:
            source = source_archive(path, name=manifest.get("name") or Path(manifest["file"]).name)
            result = images_import(project=project, source=source, image_import=image_import, **options)
    # Kept when the run broke off on a database error, so that a retry can run it again.
    _staging_delete(base, manifest)
    return result


class _local_copy:
    """A local path for a stored file: the file itself on disk storage, else a temporary copy."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        try:
            return Path(default_storage.path(self.name))
        except NotImplementedError:
            pass
        handle, tmp = tempfile.mkstemp(suffix=_archive_suffix(self.name))
        self.tmp = Path(tmp)
        with open(handle, "wb") as out, default_storage.open(self.name, "rb") as src:
            shutil.copyfileobj(src, out, 1024 * 1024)
        return self.tmp

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def _staging_delete(base: str, manifest: dict[str, Any]) -> None:
    for name in (manifest.get("file"), f"{base}/manifest.json"):
        if name:
            try:
                default_storage.delete(name)
            except OSError:
                logger.warning("could not delete the staged file %s", name)


def source_for_path(path: Path) -> Source:
    """A folder, an archive, or a single image file on this server, as a source."""
    from datasets.services.ingest_sources import local_file_candidate, source_files, source_folder

    path = Path(path)
    if path.is_dir():
        return source_folder(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if archive_kind(path):
        return source_archive(path)
    return source_files([local_file_candidate(path)], detail=str(path))
