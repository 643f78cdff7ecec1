"""In Debian's Chromium: hostile names run no script in the tools, and the framing policy holds
(task pages load only inside the configured marketplace origins; every other page in none)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datasets.models import Category, Project
from frontend.services import task_item_create, task_path
from tests.frontend.conftest import make_image

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
HOSTILE = ['<img src=x onerror="window.__xss=1">', "</script><script>window.__xss=2</script>",
           '"><svg onload="window.__xss=3">']


@pytest.fixture
def page(page):
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.errors.append(f"dialog: {d.message}"), d.dismiss()))
    yield page
    assert not page.errors, page.errors


@pytest.fixture
def framer():
    """Another origin (a loopback port of its own) that frames whatever URL it is given."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = (f'<!doctype html><title>framer</title><iframe id="f" src="{self.server.target}" '
                    'width="900" height="600"></iframe>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.target = ""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def hostile_task(db):
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user("owner", password="Owner-pass-5531")
    project = Project.objects.create(name=HOSTILE[0], owner=owner)
    for i, text in enumerate(HOSTILE, start=1):
        Category.objects.create(project=project, coco_id=i, name=f"c{i} {text}", supercategory=text)
    return task_item_create(kind="categories", project=project, images=[make_image(project, seed=3)])


def framed_url(live_server, task) -> str:
    return live_server.url + task_path(task=task) + "?assignmentId=A1&hitId=H1&workerId=W1&turkSubmitTo=https%3A%2F%2Fx"


def test_hostile_category_and_project_names_run_no_script_in_the_tool(page, live_server, hostile_task):
    page.goto(framed_url(live_server, hostile_task))
    page.wait_for_selector("#cats .name, .super")
    for group in page.locator(".super").all():  # open every group, so every name is drawn
        group.click()
        page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x'], svg[onload]").count() == 0
    shown = page.locator("body").inner_text()
    assert any(h in shown for h in HOSTILE)  # drawn as text


def frame_loaded(page, origin: str) -> bool:
    """Whether the iframe shows a document from ``origin`` (a blocked frame shows an error page)."""
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)
    for frame in page.frames[1:]:
        if frame.url.startswith(origin):
            try:
                return frame.evaluate("document.body !== null && document.body.children.length > 0")
            except Exception:  # noqa: BLE001 - a frame torn down by the block
                return False
    return False


def test_task_pages_load_only_inside_the_configured_origins(page, live_server, hostile_task, framer, settings):
    framer.target = framed_url(live_server, hostile_task)
    settings.TOOLS_FRAME_ANCESTORS = ["'self'"]
    page.goto(framer.url + "/")
    assert not frame_loaded(page, live_server.url)
    settings.TOOLS_FRAME_ANCESTORS = ["'self'", framer.url]
    page.goto(framer.url + "/")
    assert frame_loaded(page, live_server.url)


@pytest.mark.parametrize("path", ["/admin/login/", "/market/login/", "/"])
def test_other_pages_load_in_no_frame(page, live_server, framer, settings, path):
    settings.TOOLS_FRAME_ANCESTORS = ["'self'", framer.url]
    framer.target = live_server.url + path
    page.goto(framer.url + "/")
    assert not frame_loaded(page, live_server.url)
