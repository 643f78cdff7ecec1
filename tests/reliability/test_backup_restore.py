"""Backup and restore of PostgreSQL and the media store, on a real PostgreSQL server, with the
media on the local disk and on S3 (moto's server): fill, back up, wipe, restore, compare.

The comparison does not trust the tool: row counts are read per table with psycopg and files
are hashed straight from the media folder or the bucket.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import psycopg
import pytest

from tests.services import MotoS3Server, PostgresServer

pytestmark = [pytest.mark.services]

ROOT = Path(__file__).resolve().parents[2]

FILL = r'''
import json
from django.contrib.auth import get_user_model
from datasets.exports.service import export_build, export_create
from tests.exports.builders import build_project, share
from crowd.marketplace import services as market

built = build_project(n_images=10)
share(built.project, "researcher", "reader")
export = export_build(export_id=export_create(project=built.project, queue=False, min_shards=2).pk)
assert export.status == "done", export.error
requester = get_user_model().objects.create_user("requester", password="requester-pass-123")
account = market.requester_account_for(user=requester)
market.requester_key_create(user=requester)
market.worker_sign_up(username="worker", password="Sturdy-pass-9271")
print(json.dumps({"project": built.project.pk, "export": export.number}))
'''

CHECK = r'''
import json
from datasets.exports.service import export_manifest
from datasets.models import Export
export = Export.objects.get(project_id=PROJECT, number=NUMBER)
manifest = export_manifest(export=export)
print(json.dumps({"images": sum(s["images"] for s in manifest["splits"].values()), "files": len(export.files)}))
'''


def run(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert done.returncode == 0, f"manage.py {args[0]}:\n{done.stdout}\n{done.stderr}"
    return done


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def row_counts(pg: PostgresServer) -> dict[str, int]:
    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=annotator") as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def wipe_database(pg: PostgresServer) -> None:
    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE annotator WITH (FORCE)")
        conn.execute("CREATE DATABASE annotator")


class LocalMedia:
    def __init__(self, root: Path) -> None:
        self.root = root

    def env(self) -> dict:
        return {"MEDIA_ROOT": str(self.root)}

    def hashes(self) -> dict[str, str]:
        return {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.root.rglob("*")) if p.is_file()}

    def wipe(self) -> None:
        shutil.rmtree(self.root)


class S3Media:
    def __init__(self, server: MotoS3Server) -> None:
        self.server = server
        self.s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="test",
                               aws_secret_access_key="test")
        self.bucket = "annotator-media"
        self.s3.create_bucket(Bucket=self.bucket)

    def env(self) -> dict:
        return {"AWS_STORAGE_BUCKET_NAME": self.bucket, "AWS_S3_ENDPOINT_URL": self.server.url,
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}

    def keys(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def hashes(self) -> dict[str, str]:
        return {k: hashlib.sha256(self.s3.get_object(Bucket=self.bucket, Key=k)["Body"].read()).hexdigest()
                for k in sorted(self.keys())}

    def wipe(self) -> None:
        for key in self.keys():
            self.s3.delete_object(Bucket=self.bucket, Key=key)


@pytest.fixture(params=["local-media", "s3-media"])
def server(request, tmp_path):
    pg = PostgresServer().start()
    moto = None
    try:
        with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE annotator")
        if request.param == "s3-media":
            moto = MotoS3Server().start()
            media = S3Media(moto)
        else:
            media = LocalMedia(tmp_path / "media")
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE",)}
        env.update({"DATABASE_URL": pg.url, "ANNOTATOR_VAR_DIR": str(tmp_path / "var"), "DEBUG": "false",
                    "SECRET_KEY": "backup-test-" + "b" * 50, **media.env()})
        run(env, "migrate", "--noinput")
        yield pg, media, env
    finally:
        if moto:
            moto.stop()
        pg.stop()


def test_backup_wipe_restore_gives_back_every_row_and_file(server, tmp_path):
    pg, media, env = server
    filled = last_json(run(env, "shell", "--no-imports", "-c", FILL).stdout)
    rows, files = row_counts(pg), media.hashes()
    assert rows["datasets_image"] == 10 and rows["datasets_export"] == 1 and rows["marketplace_requesterkey"] == 1
    assert any(name.startswith("exports/") for name in files) and len(files) > 10

    done = run(env, "backup", str(tmp_path / "backup-1"))
    assert "Backup written" in done.stdout
    assert {p.name for p in (tmp_path / "backup-1").iterdir()} == {"backup.json", "database.dump", "media.tar"}

    wipe_database(pg)
    media.wipe()
    assert row_counts(pg) == {} and media.hashes() == {}

    done = run(env, "restore", str(tmp_path / "backup-1"), "--yes")
    assert "matches its record" in done.stdout, done.stdout
    assert row_counts(pg) == rows
    assert media.hashes() == files
    # The restored server works: its schema is current and an export reads back from storage.
    run(env, "migrate", "--check")
    check = CHECK.replace("PROJECT", str(filled["project"])).replace("NUMBER", str(filled["export"]))
    assert last_json(run(env, "shell", "--no-imports", "-c", check).stdout)["images"] == 10


def test_a_damaged_backup_is_refused_with_a_reason(server, tmp_path):
    pg, media, env = server
    run(env, "shell", "--no-imports", "-c", FILL)
    run(env, "backup", str(tmp_path / "b"))
    # A backup goes into a folder of its own.
    refused = run(env, "backup", str(tmp_path / "b"), check=False)
    assert refused.returncode == 1 and "is not empty" in refused.stderr
    # One media file altered inside the tar: the restore says so.
    tar = tmp_path / "b" / "media.tar"
    data = bytearray(tar.read_bytes())
    manifest = json.loads((tmp_path / "b" / "backup.json").read_text())
    name = next(n for n in manifest["media"]["files"] if n.endswith(".json"))
    at = data.index(name.encode()) + 512  # the member's data follows its PAX and ustar headers
    at = data.index(b"{", at)
    data[at] = ord("[")
    tar.write_bytes(bytes(data))
    failed = run(env, "restore", str(tmp_path / "b"), "--yes", check=False)
    assert failed.returncode == 1 and "restored files differ from the backup" in failed.stderr, failed.stderr
