"""Through a real HTTP server (pytest-django's live_server): a download cut off mid-stream and
resumed by the command-line client, a damaged file refused by it, and schemathesis fuzzing the
whole API from its OpenAPI schema without a single 5xx."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from datasets.exports.service import export_storage_name
from datasets.services.tokens import api_token_create
from tests.api.conftest import make_world

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]

# Runs the client with Django made unimportable, as on a researcher's machine without it.
NO_DJANGO = """
import importlib.abc, runpy, sys
class NoDjango(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            raise ImportError("django is not installed here")
sys.meta_path.insert(0, NoDjango())
sys.argv = ["datasets.client"] + sys.argv[1:]
runpy.run_module("datasets.client", run_name="__main__")
"""


def run_client(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", NO_DJANGO, *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=str(ROOT))


@pytest.fixture
def live_world(live_server):
    world = make_world()
    _, token = api_token_create(user=world.users["researcher"], name="live")
    return world, token, live_server.url


def test_a_download_broken_mid_stream_resumes_and_checks_out(live_world, tmp_path):
    world, token, base = live_world
    export = world.export
    shard = max((f for f in export.files if f["name"].endswith(".tar")), key=lambda f: f["size"])
    url = f"{base}/api/v1/projects/{world.project.pk}/exports/{export.number}/files/{shard['name']}"
    # A client that stops mid-stream: it reads part of the file, then drops the connection.
    part = tmp_path / "dl" / (shard["name"] + ".part")
    part.parent.mkdir(parents=True)
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
        part.write_bytes(response.read(shard["size"] // 2))
    done = run_client("download", "--url", base, "--token", token, "--project", str(world.project.pk),
                      "--export", str(export.number), "--to", str(tmp_path / "dl"))
    assert done.returncode == 0, done.stderr
    assert f"{shard['name']}: resuming at {shard['size'] // 2} of {shard['size']} bytes" in done.stderr
    for entry in export.files:
        data = (tmp_path / "dl" / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert not list((tmp_path / "dl").rglob("*.part"))
    again = run_client("download", "--url", base, "--token", token, "--project", str(world.project.pk),
                       "--export", str(export.number), "--to", str(tmp_path / "dl"), "--quiet")
    assert again.returncode == 0 and "resuming" not in again.stderr


def test_the_client_refuses_a_file_whose_checksum_is_wrong(live_world, tmp_path):
    world, token, base = live_world
    entry = next(f for f in world.export.files if f["name"].endswith(".tar"))
    name = export_storage_name(export=world.export, name=entry["name"])
    path = Path(default_storage.path(name))
    data = bytearray(path.read_bytes())
    data[600] ^= 0x01
    path.write_bytes(bytes(data))
    done = run_client("download", "--url", base, "--token", token, "--project", str(world.project.pk),
                      "--export", str(world.export.number), "--to", str(tmp_path / "dl"), "--quiet")
    assert done.returncode == 1
    assert f"error: {entry['name']}: checksum mismatch" in done.stderr
    assert not (tmp_path / "dl" / entry["name"]).exists()
    assert not (tmp_path / "dl" / (entry["name"] + ".part")).exists()


def test_the_client_explains_refusals(live_world, tmp_path):
    world, token, base = live_world
    other = run_client("download", "--url", base, "--token", token, "--project", str(world.other_project.pk),
                       "--export", "1", "--to", str(tmp_path), "--quiet")
    assert other.returncode == 1 and "HTTP 404" in other.stderr and "not shared with you" in other.stderr
    bad = run_client("download", "--url", base, "--token", "ann_wrong", "--project", str(world.project.pk),
                     "--export", "1", "--to", str(tmp_path), "--quiet")
    assert bad.returncode == 1 and "HTTP 401" in bad.stderr and "refused the token" in bad.stderr
    down = run_client("download", "--url", "http://127.0.0.1:9", "--token", token, "--project", "1",
                      "--export", "1", "--to", str(tmp_path), "--quiet")
    assert down.returncode != 0 and "cannot reach" in (down.stderr + down.stdout)


def test_schemathesis_finds_no_server_errors(live_world, tmp_path):
    world, _, base = live_world
    _, token = api_token_create(user=world.users["owner"], name="fuzz")  # the owner may call everything
    report = tmp_path / "report.json"
    # Aim path parameters at real objects, so the fuzzing reaches past the 404s.
    (tmp_path / "schemathesis.toml").write_text(
        "[parameters]\n"
        f'"path.project_id" = {world.project.pk}\n'
        f'"path.number" = {world.export.number}\n'
        f'"path.image_id" = {world.image.pk}\n'
    )
    done = subprocess.run(
        [str(Path(sys.executable).with_name("st")), "run", f"{base}/api/schema/",
         "-H", f"Authorization: Token {token}",
         "--checks", "not_a_server_error",
         "--phases", "examples,coverage,fuzzing",
         "--max-examples", "15", "--seed", "1", "--workers", "1",
         "--exclude-method", "DELETE",  # revoking its own token would leave it nothing to test
         "--generation-database", "none", "--no-color",
         "--report", "json", "--report-json-path", str(report)],
        capture_output=True, text=True, timeout=540, cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "not_a_server_error" in done.stdout or report.exists()
    assert "/api/v1/projects/{project_id}/exports/" in done.stdout or json.loads(report.read_text())
