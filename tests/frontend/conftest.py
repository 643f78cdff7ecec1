"""Small synthetic fixtures for the labeling tools: a project, a few drawn images, categories."""
from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from PIL import Image as PILImage
from PIL import ImageDraw

from datasets.models import Category, Image, InstancePoint, Polygon, Project, Stage
from datasets.services.geometry import outline_check


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    img = PILImage.new("RGB", (width, height), (40 + seed * 30 % 200, 90, 140))
    draw = ImageDraw.Draw(img)
    draw.ellipse([width * 0.3, height * 0.3, width * 0.7, height * 0.7], fill=(230, 200, 60))
    draw.rectangle([width * 0.05, height * 0.6, width * 0.25, height * 0.9], fill=(200, 60, 60))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_image(project: Project, width: int = 640, height: int = 480, seed: int = 0) -> Image:
    data = png_bytes(width, height, seed)
    import hashlib

    sha = hashlib.sha256(data + bytes([seed])).hexdigest()
    image = Image(project=project, width=width, height=height, format="PNG", file_size=len(data), sha256=sha,
                  original_name=f"synthetic-{seed}.png")
    image.file.save(f"synthetic-{seed}.png", ContentFile(data), save=False)
    image.save()
    return image


def make_polygon(image: Image, category: Category, flat: list[float], **kw) -> Polygon:
    outline = outline_check(parts=[flat], width=image.width, height=image.height)
    return Polygon.objects.create(image=image, category=category, parts=outline.parts, area=outline.area,
                                  bbox=outline.bbox, stage=kw.pop("stage", Stage.REQUESTER),
                                  made_by=kw.pop("made_by", "requester"), **kw)


@pytest.fixture
def project(db):
    owner = get_user_model().objects.create_user("owner", password="pw-owner-123")
    return Project.objects.create(name="Tools test", owner=owner)


@pytest.fixture
def categories(project):
    rows = [(1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (17, "cat", "animal"),
            (18, "dog", "animal"), (90, "<img src=x onerror=alert(1)>", "indoor")]
    return [Category.objects.create(project=project, coco_id=i, name=n, supercategory=s) for i, n, s in rows]


@pytest.fixture
def images(project):
    return [make_image(project, 640, 480, seed=i) for i in range(3)]


@pytest.fixture
def point(images, categories):
    return InstancePoint.objects.create(image=images[0], category=categories[3], x=320, y=240,
                                        stage=Stage.SPOTTING, made_by="w0")


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - a HIT page that frames a tool, as MTurk's worker site does
        body = self.server.pages.get(self.path.split("?")[0], "").encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.server.posts.append({"path": self.path, "form": form})
        body = b"<!doctype html><title>Submitted</title><p id=done>Assignment submitted</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def turk_server():
    """A loopback stand-in for {turkSubmitTo}: records every form posted to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.posts = []
    server.pages = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
