"""Real image files, archives and an HTTP server made by the tests themselves."""
from __future__ import annotations

import io
import random
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image as PILImage

from tests.factories import ProjectFactory


def jpeg_bytes(width: int = 64, height: int = 48, *, seed: int = 0, exif_orientation: int | None = None, quality: int = 90) -> bytes:
    """A JPEG of random noise (so every seed gives other bytes, and truncation hits scan data)."""
    rng = random.Random(seed)
    im = PILImage.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    kwargs = {"quality": quality}
    if exif_orientation is not None:
        exif = PILImage.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    im.save(out, "JPEG", **kwargs)
    return out.getvalue()


def image_bytes(fmt: str, width: int = 40, height: int = 30, *, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    im = PILImage.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    im.save(out, fmt)
    return out.getvalue()


def truncated_jpeg(seed: int = 99) -> bytes:
    data = jpeg_bytes(300, 200, seed=seed)
    return data[: int(len(data) * 0.6)]


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(autouse=True)
def private_media(request, settings, tmp_path):
    """Each test stores images in its own folder, so stored files can be counted exactly.

    Tests with a real Celery worker keep the shared media folder the worker also uses.
    """
    if "celery_worker" in request.fixturenames:
        return
    media = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media), "base_url": settings.MEDIA_URL},
        },
    }
    settings.MEDIA_ROOT = media


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def write(tmp_path):
    """write("name.jpg", bytes) -> Path, inside a fresh folder of the test."""
    folder = tmp_path / "in"
    folder.mkdir()

    def _write(name: str, data: bytes) -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    _write.folder = folder
    return _write


def entry_for(report: list[dict], name: str) -> dict:
    matches = [e for e in report if e["name"] == name]
    assert matches, f"{name} is not in the report: {report}"
    return matches[0]


# --- A real HTTP server on loopback ----------------------------------------------------------


class ImageServer:
    """http.server in a thread: ``routes`` maps a path to (status, headers, body or callable)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, headers, body = route
                if callable(body):
                    body(self)
                    return
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "ImageServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = ImageServer().start()
    yield server
    server.stop()


def stream_forever(handler) -> None:
    """A body without Content-Length that never ends (until the client hangs up)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Connection", "close")
    handler.end_headers()
    chunk = b"\xff" * 65536
    try:
        for _ in range(10_000):
            handler.wfile.write(chunk)
    except OSError:
        pass


def answer_slowly(handler) -> None:
    time.sleep(3)
    try:
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    except OSError:
        pass
