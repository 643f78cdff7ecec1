"""Hostile uploads and URL imports on real files and a real HTTP server, beyond what
tests/datasets/test_ingest.py and test_ingest_urls.py already prove (zip ratio and total limits,
pixel bombs from the header, SVG, traversal, links and devices in archives, loopback, private,
link-local and metadata addresses, redirects re-checked, size cut off, a silent server)."""
from __future__ import annotations

import io
import struct
import tarfile
import time
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from datasets.models import Image, ImageImport
from datasets.services.ingest import images_import, report_message
from datasets.services.ingest_sources import source_archive, source_uploads, source_urls
from tests.datasets.conftest import entry_for, http_server, jpeg_bytes  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def report(result: ImageImport, name: str) -> tuple[str, str]:
    entry = entry_for(result.report, name)
    return entry["status"], report_message(entry)


# --- Archives ------------------------------------------------------------------------------------

def test_a_zip_member_lying_about_its_size_is_cut_at_the_declared_size(project, tmp_path):
    """The headers say 900 kB (under the ratio check's floor), the data inflates to 60 MB: reading
    stops at the declared size and the member is refused; nothing large is ever held."""
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("liar.jpg", b"\0" * 60_000_000)
        zf.writestr("good.jpg", jpeg_bytes(seed=81))
    data = bytearray(path.read_bytes())
    real = struct.pack("<I", 60_000_000)
    lie = struct.pack("<I", 900_000)
    assert data.count(real) == 2  # the local header and the central directory
    path.write_bytes(bytes(data).replace(real, lie))
    import tracemalloc

    tracemalloc.start()
    result = images_import(project=project, source=source_archive(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    status, message = report(result, "liar.jpg")
    assert status == "failed", message
    assert report(result, "good.jpg")[0] == "imported"
    assert peak < 30_000_000, peak


def test_an_archive_inside_an_archive_is_not_unpacked(project, tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("hidden.jpg", jpeg_bytes(seed=82))
    path = tmp_path / "outer.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("inner.zip", inner.getvalue())
        zf.writestr("inner.jpg", inner.getvalue())  # a zip named like a photo
    result = images_import(project=project, source=source_archive(path))
    assert result.imported == 0
    for name in ("inner.zip", "inner.jpg"):
        assert report(result, name)[0] == "failed"
    assert not Image.objects.filter(original_name="hidden.jpg").exists()


def test_a_gzip_bomb_of_a_tar_stops_at_the_total_limit_quickly(project, tmp_path, settings):
    """tar.gz has no per-member compressed size to compare, so the total bound does the work:
    a few kB of gzip that inflate to 200 MB are stopped once the total is passed."""
    settings.INGEST_MAX_ARCHIVE_BYTES = 20_000_000
    settings.INGEST_MAX_FILE_BYTES = 10_000_000
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for i in range(20):
            info = tarfile.TarInfo(f"zeros{i}.jpg")
            info.size = 9_999_999
            tf.addfile(info, io.BytesIO(b"\0" * info.size))
    assert path.stat().st_size < 400_000
    started = time.monotonic()
    result = images_import(project=project, source=source_archive(path))
    assert time.monotonic() - started < 30
    assert result.imported == 0
    text = (result.error or "") + " ".join(report_message(e) for e in result.report)
    assert "bytes uncompressed, over the archive limit" in text


# --- Polyglots and scripts in images -------------------------------------------------------------

def test_a_jpeg_carrying_html_is_stored_as_a_jpeg_and_served_inert(project):
    """A real JPEG with a page appended is an image (kept byte for byte); whatever name it came
    with, it is stored as .jpg, and served with its type, nosniff and a sandboxing policy."""
    payload = jpeg_bytes(seed=83) + b"<html><script>alert(document.cookie)</script></html>"
    upload = SimpleUploadedFile("page.html", payload, content_type="text/html")
    result = images_import(project=project, source=source_uploads([upload]))
    image = Image.objects.get(pk=entry_for(result.report, "page.html")["image"])
    assert image.file.name.endswith(".jpg")
    response = Client().get(image.file.url)
    assert b"".join(response.streaming_content) == payload
    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"] and "default-src 'none'" in response["Content-Security-Policy"]


@pytest.mark.parametrize("name, data", [
    ("logo.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    ("logo.jpg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
    ("page.gif", b"GIF89a<script>alert(1)</script>"),
    ("photo.jpg", b"<!doctype html><img src=x onerror=alert(1)>"),
    ("archive.jpg", b"PK\x03\x04" + b"\0" * 100),
])
def test_markup_and_scripts_dressed_as_images_are_refused(project, name, data):
    upload = SimpleUploadedFile(name, data, content_type="image/jpeg")
    result = images_import(project=project, source=source_uploads([upload]))
    status, message = report(result, name)
    assert status == "failed" and ("not an image" in message or "not accepted" in message), message
    assert Image.objects.count() == 0


# --- URL imports ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://2130706433/a.jpg",              # 127.0.0.1 as one decimal number
    "http://0x7f000001/a.jpg",              # ... in hex
    "http://127.1/a.jpg",                   # ... shortened
    "http://[::ffff:169.254.169.254]/latest/meta-data/",  # metadata, IPv4-mapped
    "http://[fd00:ec2::254]/latest/meta-data/",           # AWS's IPv6 metadata address
    "http://[fe80::1]/a.jpg",               # link-local
    "http://100.64.0.1/a.jpg",              # carrier-grade NAT
    "http://192.0.0.170/a.jpg",             # reserved
])
def test_addresses_written_in_other_ways_are_still_refused(project, url):
    result = images_import(project=project, source=source_urls([url]))
    status, message = report(result, url)
    assert status == "failed" and "refused" in message and "private addresses are not allowed" in message, message


def trickle(handler) -> None:
    """Headers at once, then one byte every 0.2 s: every read succeeds, the whole never ends."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    try:
        for _ in range(100_000):
            handler.wfile.write(b"\xff")
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass


def test_a_server_trickling_bytes_is_cut_off_at_the_deadline(project, http_server, settings):  # noqa: F811
    settings.INGEST_ALLOW_PRIVATE_URLS = True
    settings.INGEST_URL_TIMEOUT = 1.5
    http_server.routes["/slow-drip.jpg"] = (200, {}, trickle)
    url = http_server.url("/slow-drip.jpg")
    started = time.monotonic()
    result = images_import(project=project, source=source_urls([url]))
    elapsed = time.monotonic() - started
    status, message = report(result, url)
    assert status == "failed" and "took longer than 1.5 seconds" in message, message
    assert elapsed < 5, elapsed
