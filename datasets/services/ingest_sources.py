"""Where images come from: each source yields ``Candidate`` files one at a time, never all at once.

A source checks what it can before any byte is read (unsafe archive paths, links and devices,
sizes declared in archive headers, compression ratios, member counts) and hands the file on as
either a local path or a way to stream its bytes. ``datasets.services.ingest`` does the rest.
A source that cannot be read at all (a missing folder, a damaged archive, a bucket that does not
exist) raises ``SourceError``.
"""
from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from django.conf import settings

from datasets.models import ImageImport

# Files that operating systems leave beside photos; never images, never worth a report line.
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


class SourceError(Exception):
    """The source as a whole cannot be read; the message names it and says why."""


class Refused(Exception):
    """One file is refused; the message is the reason in plain words (without the file name)."""


@dataclass
class Candidate:
    """One file to import. Exactly one of ``path``, ``stream`` or ``fetch`` gives its bytes."""

    name: str  # what the report calls it: a relative path, an archive member, a URL, an S3 key
    original_name: str = ""  # the file's own name, kept on the Image
    path: Path | None = None  # a local regular file, read in place
    stream: Callable[[], Any] | None = None  # returns a binary file object to read and close
    fetch: Callable[[BinaryIO, int], None] | None = None  # writes the bytes into a file (URLs)
    size: int | None = None  # the size declared before reading, when known
    refusal: str | None = None  # refused before reading
    source_url: str = ""
    license: str | None = None  # per-file overrides of the import's licence and attribution
    attribution: str | None = None

    def __post_init__(self) -> None:
        if not self.original_name:
            self.original_name = PurePosixPath(self.name.replace("\\", "/")).name or self.name


@dataclass
class Source:
    kind: str  # an ImageImport.Source value
    detail: str
    items: Callable[[], Iterator[Candidate]]
    count: Callable[[], int | None] = field(default=lambda: None)


def _limit(name: str) -> int:
    return int(getattr(settings, name))


def is_junk(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    base = parts[-1].lower()
    return "__MACOSX" in parts or base.startswith("._") or base in JUNK_NAMES


def unsafe_path_reason(name: str) -> str | None:
    """Why an archive member's path would escape the folder it is unpacked to, or None."""
    n = name.replace("\\", "/")
    if "\x00" in n:
        return "unsafe path in the archive (it contains a NUL byte)"
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n):
        return "unsafe path in the archive (an absolute path)"
    if ".." in n.split("/"):
        return "unsafe path in the archive (it climbs out with '..')"
    return None


# --- Uploaded files and local files --------------------------------------------------------


def source_uploads(files: list[Any]) -> Source:
    """Files uploaded through a form (Django UploadedFile objects)."""

    def items() -> Iterator[Candidate]:
        for upload in files:
            name = os.path.basename(upload.name or "upload")
            temp_path = getattr(upload, "temporary_file_path", None)
            if temp_path is not None:
                yield Candidate(name=name, path=Path(temp_path()), size=upload.size)
            else:
                def stream(upload=upload):
                    upload.seek(0)
                    return _Unclosing(upload)

                yield Candidate(name=name, stream=stream, size=upload.size)

    names = ", ".join(os.path.basename(f.name or "") for f in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return Source(ImageImport.Source.UPLOAD, f"{len(files)} uploaded file(s): {names}{more}"[:1000], items, lambda: len(files))


class _Unclosing:
    """A file object whose close() leaves the underlying upload open (Django closes it)."""

    def __init__(self, f) -> None:
        self._f = f

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        pass


def source_files(candidates: list[Candidate], *, detail: str, kind: str = ImageImport.Source.FOLDER) -> Source:
    """A fixed list of candidates (local files with their own licence, for example)."""
    return Source(kind, detail[:1000], lambda: iter(candidates), lambda: len(candidates))


def local_file_candidate(path: Path, name: str | None = None, **extra: Any) -> Candidate:
    name = name or path.name
    try:
        st = os.lstat(path)
    except OSError as exc:
        return Candidate(name=name, refusal=f"cannot be read ({exc.strerror})", **extra)
    if stat.S_ISLNK(st.st_mode):
        return Candidate(name=name, refusal="a symbolic link, not a regular file", **extra)
    if not stat.S_ISREG(st.st_mode):
        return Candidate(name=name, refusal="not a regular file", **extra)
    return Candidate(name=name, path=path, size=st.st_size, **extra)


# --- A folder on the server ------------------------------------------------------------------


def source_folder(folder: Path) -> Source:
    """Every file under a server folder, in name order; links are reported, never followed."""
    folder = Path(folder)

    def walk() -> Iterator[tuple[Path, str]]:
        if not folder.is_dir():
            raise SourceError(f"{folder}: not a folder on this server")
        for root, dirs, files in os.walk(folder, followlinks=False, onerror=_raise_walk):
            dirs.sort()
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
            for filename in sorted(files):
                rel = os.path.relpath(os.path.join(root, filename), folder)
                if filename.startswith(".") or is_junk(rel):
                    continue
                yield Path(root) / filename, rel

    def items() -> Iterator[Candidate]:
        for path, rel in walk():
            yield local_file_candidate(path, rel)

    return Source(ImageImport.Source.FOLDER, str(folder)[:1000], items, lambda: sum(1 for _ in walk()))


def _raise_walk(exc: OSError) -> None:
    raise SourceError(f"{exc.filename}: cannot be read ({exc.strerror})")


# --- Archives --------------------------------------------------------------------------------


def archive_kind(path: Path) -> str | None:
    """'zip', 'tar', or None when the file is neither."""
    try:
        if zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        return None
    return None


def source_archive(path: Path, *, name: str | None = None) -> Source:
    """The members of one zip or tar archive (tar may be gzip, bzip2 or xz compressed)."""
    path = Path(path)
    label = name or path.name

    def items() -> Iterator[Candidate]:
        if not path.is_file():
            raise SourceError(f"{label}: no such file")
        kind = archive_kind(path)
        if kind == "zip":
            yield from _zip_items(path, label)
        elif kind == "tar":
            yield from _tar_items(path, label)
        else:
            raise SourceError(f"{label}: not a zip or tar archive")

    def count() -> int | None:
        if archive_kind(path) == "zip":
            try:
                with zipfile.ZipFile(path) as zf:
                    return sum(1 for i in zf.infolist() if not i.is_dir())
            except (zipfile.BadZipFile, OSError):
                return None
        return None

    return Source(ImageImport.Source.ARCHIVE, label[:1000], items, count)


class _Budget:
    """The archive's running total of bytes read, against INGEST_MAX_ARCHIVE_BYTES."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.limit = _limit("INGEST_MAX_ARCHIVE_BYTES")
        self.used = 0

    def check(self, size: int) -> None:
        if self.used + size > self.limit:
            raise SourceError(
                f"{self.label}: more than {self.limit:,} bytes uncompressed, over the archive limit; "
                "the rest was not read"
            )
        self.used += size


def _member_refusal(name: str, size: int) -> str | None:
    reason = unsafe_path_reason(name)
    if reason:
        return reason
    max_bytes = _limit("INGEST_MAX_FILE_BYTES")
    if size > max_bytes:
        return f"{size:,} bytes is over the limit of {max_bytes:,} bytes"
    return None


def _zip_items(path: Path, label: str) -> Iterator[Candidate]:
    max_members = _limit("INGEST_MAX_ARCHIVE_MEMBERS")
    max_ratio = _limit("INGEST_MAX_COMPRESSION_RATIO")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{label}: not a readable zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise SourceError(f"{label}: {len(infos):,} members is over the limit of {max_members:,}")
        declared = sum(i.file_size for i in infos)
        budget = _Budget(label)
        if declared > budget.limit:
            raise SourceError(
                f"{label}: {declared:,} bytes uncompressed is over the limit of {budget.limit:,} bytes"
            )
        for info in infos:
            name = info.filename
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            reason = unsafe_path_reason(name)
            if reason is None and stat.S_ISLNK(mode):
                reason = "a symbolic link in the archive, not a regular file"
            elif reason is None and mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
                reason = "not a regular file in the archive"
            if reason is None and is_junk(name):
                continue
            if reason is None and info.flag_bits & 0x1:
                reason = "encrypted in the archive"
            if reason is None:
                reason = _member_refusal(name, info.file_size)
            if reason is None and info.file_size > 1024 * 1024:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > max_ratio:
                    reason = (
                        f"suspicious compression ratio ({ratio:,.0f} to 1, over the limit of {max_ratio} to 1); "
                        "refused as a possible zip bomb"
                    )
            if reason:
                yield Candidate(name=name, refusal=reason)
                continue
            budget.check(info.file_size)

            def stream(info=info):
                return zf.open(info)

            yield Candidate(name=name, stream=stream, size=info.file_size)


def _tar_items(path: Path, label: str) -> Iterator[Candidate]:
    max_members = _limit("INGEST_MAX_ARCHIVE_MEMBERS")
    budget = _Budget(label)
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"{label}: not a readable tar archive ({exc})") from None
    with tf:
        seen = 0
        while True:
            try:
                member = tf.next()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise SourceError(f"{label}: the archive is damaged after {seen:,} members ({exc})") from None
            if member is None:
                break
            # TarFile keeps every member it has read; forget them so memory stays flat.
            tf.members = []
            seen += 1
            if seen > max_members:
                raise SourceError(f"{label}: more than {max_members:,} members, over the limit; the rest was not read")
            name = member.name
            if member.isdir():
                continue
            reason = unsafe_path_reason(name)
            if reason is None:
                if member.issym():
                    reason = "a symbolic link in the archive, not a regular file"
                elif member.islnk():
                    reason = "a hard link in the archive, not a regular file"
                elif member.ischr() or member.isblk():
                    reason = "a device file in the archive, not a regular file"
                elif member.isfifo():
                    reason = "a named pipe in the archive, not a regular file"
                elif not member.isreg():
                    reason = "not a regular file in the archive"
            if reason is None and is_junk(name):
                continue
            if reason is None:
                reason = _member_refusal(name, member.size)
            if reason:
                yield Candidate(name=name, refusal=reason)
                continue
            budget.check(member.size)

            def stream(member=member):
                f = tf.extractfile(member)
                if f is None:
                    raise Refused("not a regular file in the archive")
                return f

            yield Candidate(name=name, stream=stream, size=member.size)


# --- URLs ------------------------------------------------------------------------------------


def parse_url_list(text: str) -> list[str]:
    """One URL a line; blank lines and lines starting with # are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def source_urls(urls: list[str], *, detail: str = "") -> Source:
    from datasets.services.ingest_fetch import FetchError, fetch_to_file

    def items() -> Iterator[Candidate]:
        for url in urls:
            try:
                path = urlsplit(url).path
            except ValueError:
                path = ""
            base = unquote(PurePosixPath(path).name) or "download"

            def fetch(out: BinaryIO, max_bytes: int, url=url) -> None:
                try:
                    fetch_to_file(url, out, max_bytes=max_bytes)
                except FetchError as exc:
                    raise Refused(str(exc)) from None

            yield Candidate(name=url, original_name=base[:500], fetch=fetch, source_url=url if len(url) <= 2000 else "")

    return Source(ImageImport.Source.URLS, (detail or f"{len(urls)} URL(s)")[:1000], items, lambda: len(urls))


# --- S3 --------------------------------------------------------------------------------------


def source_s3(url: str, *, endpoint_url: str | None = None) -> Source:
    """Every object under an S3 prefix (``s3://bucket/prefix``), streamed one at a time."""
    from botocore.exceptions import BotoCoreError, ClientError

    from datasets.services.ingest_s3 import s3_client, s3_url_parse

    try:
        bucket, prefix = s3_url_parse(url)
    except ValueError as exc:
        raise SourceError(str(exc)) from None

    def items() -> Iterator[Candidate]:
        client = s3_client(endpoint_url=endpoint_url)
        paginator = client.get_paginator("list_objects_v2")
        max_bytes = _limit("INGEST_MAX_FILE_BYTES")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/") or is_junk(key) or PurePosixPath(key).name.startswith("."):
                        continue
                    name = f"s3://{bucket}/{key}"
                    size = int(obj.get("Size", 0))
                    if size > max_bytes:
                        yield Candidate(name=name, refusal=f"{size:,} bytes is over the limit of {max_bytes:,} bytes")
                        continue

                    def stream(key=key):
                        try:
                            return client.get_object(Bucket=bucket, Key=key)["Body"]
                        except (BotoCoreError, ClientError) as exc:
                            raise Refused(f"cannot be read from S3 ({exc})") from None

                    yield Candidate(name=name, original_name=PurePosixPath(key).name, stream=stream, size=size)
        except (BotoCoreError, ClientError) as exc:
            raise SourceError(f"{url}: cannot be listed ({exc})") from None

    return Source(ImageImport.Source.S3, url[:1000], items)
