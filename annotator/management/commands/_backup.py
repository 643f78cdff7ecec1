"""Backing up and restoring the database and the media store (``manage.py backup`` / ``restore``).

A backup is a folder of three files:

- ``database.dump``: PostgreSQL's own custom-format dump (``pg_dump -Fc``), or for the embedded
  SQLite database a copy made with SQLite's online backup API (``database.sqlite3``);
- ``media.tar``: every file of Django's default storage (the local media folder or the S3
  bucket, read through the same storage API the application uses), names as stored;
- ``backup.json``: when and from what it was made, the row count of every table, and the size
  and sha256 of every media file, which ``restore`` checks its work against.

The database is dumped first, then the media: images and exports are written before the rows
that name them and never changed in place, so every file a backed-up row names is in the tar.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import connection

FORMAT = "annotator-backup"
FORMAT_VERSION = 1
MANIFEST = "backup.json"
MEDIA_TAR = "media.tar"
PG_DUMP = "database.dump"
SQLITE_COPY = "database.sqlite3"


class BackupError(Exception):
    pass


def pg_tool(name: str) -> str:
    """pg_dump / pg_restore: from PG_BIN, Debian's PostgreSQL 15 folder, or the PATH."""
    for folder in (os.environ.get("PG_BIN", ""), "/usr/lib/postgresql/15/bin"):
        if folder and (Path(folder) / name).exists():
            return str(Path(folder) / name)
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} was not found: install postgresql-client-15 or set PG_BIN to its folder.")
    return found


def _pg_args_env() -> tuple[list[str], dict[str, str]]:
    s = connection.settings_dict
    args = ["--host", s["HOST"] or "localhost", "--port", str(s["PORT"] or 5432), "--username", s["USER"] or "postgres",
            "--dbname", s["NAME"]]
    env = {**os.environ}
    if s.get("PASSWORD"):
        env["PGPASSWORD"] = s["PASSWORD"]
    return args, env


def _engine() -> str:
    vendor = connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise BackupError(f"backups of a {vendor} database are not supported (PostgreSQL or SQLite)")
    return vendor


def table_counts() -> dict[str, int]:
    """Rows in every table of the database, by table name."""
    counts = {}
    with connection.cursor() as cursor:
        for table in sorted(connection.introspection.table_names(cursor)):
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
            counts[table] = cursor.fetchone()[0]
    return counts


def storage_files(prefix: str = "") -> Iterator[str]:
    """Every file name in the default storage, depth first, in a stable order."""
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in sorted(files):
        yield f"{prefix}/{name}" if prefix else name
    for folder in sorted(folders):
        yield from storage_files(f"{prefix}/{folder}" if prefix else folder)


class _Hashing:
    """A read-only file wrapper that hashes what passes through it."""

    def __init__(self, f) -> None:
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


def backup_create(*, folder: Path, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Write a backup of the database and the media store into ``folder`` (created; must be empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty: give each backup a folder of its own.")
    engine = _engine()
    counts = table_counts()
    if engine == "postgresql":
        args, env = _pg_args_env()
        done = subprocess.run([pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                               "--file", str(folder / PG_DUMP), *args], env=env, capture_output=True, text=True)
        if done.returncode:
            raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
        database = PG_DUMP
    else:
        target = sqlite3.connect(folder / SQLITE_COPY)
        try:
            connection.ensure_connection()
            connection.connection.backup(target)  # SQLite's online backup: a consistent copy
        finally:
            target.close()
        database = SQLITE_COPY
    say(f"database: {sum(counts.values())} rows in {len(counts)} tables -> {database}")

    files: dict[str, dict[str, Any]] = {}
    with tarfile.open(folder / MEDIA_TAR, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in storage_files():
            size = default_storage.size(name)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o644, 0
            with default_storage.open(name, "rb") as f:
                hashing = _Hashing(f)
                tar.addfile(info, hashing)
            if hashing.size != size:
                raise BackupError(f"{name} changed size while it was copied ({size} -> {hashing.size})")
            files[name] = {"size": size, "sha256": hashing.sha256.hexdigest()}
    say(f"media: {len(files)} files, {sum(f['size'] for f in files.values())} bytes -> {MEDIA_TAR}")
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "database": {"engine": engine, "file": database, "tables": counts},
        "media": {"file": MEDIA_TAR, "storage": type(default_storage._wrapped).__name__, "files": files},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise BackupError(f"{folder} holds no {MANIFEST}: not a backup made by manage.py backup.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"{path} is not a backup this version can read.")
    return manifest


def backup_restore(*, folder: Path, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Put a backup back: the database is replaced by the backed-up one, and every backed-up
    file is written to the media store (replacing a file of the same name). Then both are
    compared with the backup's record; a difference raises ``BackupError``."""
    manifest = _read_manifest(folder)
    engine = _engine()
    if engine != manifest["database"]["engine"]:
        raise BackupError(f"this backup is of a {manifest['database']['engine']} database; this server uses {engine}.")
    if engine == "postgresql":
        connection.close()
        args, env = _pg_args_env()
        done = subprocess.run([pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
                               "--single-transaction", "--exit-on-error", *args, str(folder / PG_DUMP)],
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise BackupError(f"pg_restore failed: {done.stderr.strip()}")
    else:
        connection.ensure_connection()
        source = sqlite3.connect(folder / SQLITE_COPY)
        try:
            source.backup(connection.connection)  # page by page into the live file, under its lock
        finally:
            source.close()
    counts = table_counts()
    expected = manifest["database"]["tables"]
    differ = {t: (expected.get(t), counts.get(t)) for t in set(expected) | set(counts) if expected.get(t) != counts.get(t)}
    if differ:
        raise BackupError(f"the restored database differs from the backup (table: backup, now): {differ}")
    say(f"database: {sum(counts.values())} rows in {len(counts)} tables restored")

    wanted = manifest["media"]["files"]
    with tarfile.open(folder / MEDIA_TAR, "r") as tar:
        for member in tar:
            if not member.isfile() or member.name not in wanted:
                raise BackupError(f"{MEDIA_TAR} holds {member.name!r}, which the backup's record does not list.")
            if default_storage.exists(member.name):
                default_storage.delete(member.name)
            with tar.extractfile(member) as f:
                saved = default_storage.save(member.name, File(f, name=Path(member.name).name))
            if saved != member.name:
                raise BackupError(f"the storage saved {member.name} as {saved}")
    bad = []
    for name, entry in wanted.items():
        digest = hashlib.sha256()
        with default_storage.open(name, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            bad.append(name)
    if bad:
        raise BackupError(f"{len(bad)} restored files differ from the backup, e.g. {bad[:3]}")
    say(f"media: {len(wanted)} files restored and checked (sha256)")
    return manifest
