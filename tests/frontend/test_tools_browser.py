"""The five labeling tools in Debian's Chromium: a worker completes each task with mouse and
keyboard, and the answer stored on the server equals what was drawn, in image pixels."""
from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from datasets.models import ImageLabel, InstancePoint, Polygon
from frontend import clock
from frontend.models import TaskAnswer, TrainingResult, VerificationVote
from frontend.services import task_item_create, task_path
from tests.frontend.conftest import make_polygon

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
TOL = 0.006  # the tools round image coordinates to 0.01 px


@pytest.fixture
def page(page):
    """The browser page, failing the test on any script error or alert (XSS)."""
    page.set_viewport_size({"width": 1280, "height": 760})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.errors.append(f"dialog: {d.message}"), d.dismiss()))
    yield page
    assert not page.errors, page.errors


def mturk_query(assignment="A1", worker="W1", submit_to="http://127.0.0.1:9"):
    return f"?assignmentId={assignment}&hitId=H1&workerId={worker}&turkSubmitTo={quote(submit_to, safe='')}"


def settle(page):
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def view(page):
    """The viewport's transform (image -> viewport pixels) and where the viewport is on the page."""
    settle(page)
    return page.eval_on_selector(
        ".viewport",
        "e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height, "
        "scale: +e.dataset.scale, tx: +e.dataset.tx, ty: +e.dataset.ty}; }",
    )


def to_page(t, ix, iy):
    return round(t["x"] + t["tx"] + ix * t["scale"]), round(t["y"] + t["ty"] + iy * t["scale"])


def to_image(t, px, py):
    return (round((px - t["x"] - t["tx"]) / t["scale"], 2), round((py - t["y"] - t["ty"]) / t["scale"], 2))


def close(a, b):
    return all(abs(x - y) <= TOL for x, y in zip(a, b, strict=True))


def snapshot(page):
    return page.evaluate("() => window.annotatorTool.editor.snapshot()")


def shot(page, name):
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / f"{name}.png"))


def login(page, live_server, username="alice"):
    get_user_model().objects.create_user(username, password="pw-123-secret")
    client = Client()
    client.login(username=username, password="pw-123-secret")
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])


def test_segmentation_mturk_flow_zoom_pan_edit_undo_reload_submit(page, live_server, project, point, categories, turk_server):
    make_polygon(point.image, categories[0], [20, 20, 120, 20, 120, 90, 20, 90])  # shown faintly
    task = task_item_create(kind="segmentation", project=project, point=point)
    url = live_server.url + task_path(task=task) + mturk_query("A-SEG", "W-SEG", turk_server.url + "/")
    page.goto(url)
    assert page.locator("canvas.existing").get_attribute("data-outlines") == "1"
    assert page.locator("[data-role=target]").count() == 1

    # Zoom with the wheel around a point, then pan by dragging empty space.
    t0 = view(page)
    page.mouse.move(t0["x"] + 300, t0["y"] + 250)
    page.mouse.wheel(0, -240)
    page.mouse.move(t0["x"] + 600, t0["y"] + 500)
    page.mouse.down()
    page.mouse.move(t0["x"] + 560, t0["y"] + 470, steps=4)
    page.mouse.up()
    t = view(page)
    assert t["scale"] > t0["scale"] * 1.3
    # Once the view rests, the outline canvas is redrawn at the new transform (crisp), not scaled.
    page.wait_for_function("() => document.querySelector('canvas.existing').style.transform === 'none'")

    # Four clicks, then close on the first vertex.
    clicks = [to_page(t, ix, iy) for ix, iy in [(250, 180), (390, 185), (395, 300), (255, 305)]]
    expected = [to_image(t, *c) for c in clicks]
    for c in clicks:
        page.mouse.click(*c)
    page.mouse.click(*clicks[0])
    parts = snapshot(page)
    assert len(parts) == 1 and parts[0]["closed"] is True
    assert all(close(a, b) for a, b in zip(parts[0]["points"], expected, strict=True))

    # Drag vertex 2: one undo step for the whole drag, and redo.
    start = clicks[2]
    end = (start[0] + 17, start[1] + 11)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()
    expected[2] = to_image(t, *end)
    assert close(snapshot(page)[0]["points"][2], expected[2])
    page.keyboard.press("Control+z")
    assert close(snapshot(page)[0]["points"][2], to_image(t, *start))
    page.keyboard.press("Control+y")
    assert close(snapshot(page)[0]["points"][2], expected[2])

    # Insert a vertex on edge 0 (it lands on the edge), then delete vertex 3 with a right-click.
    (ax, ay), (bx, by) = expected[0], expected[1]
    mid = to_page(t, (ax + bx) / 2, (ay + by) / 2)
    page.mouse.click(*mid)
    px, py = to_image(t, *mid)
    k = max(0.0, min(1.0, ((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2)))
    expected.insert(1, (round(ax + k * (bx - ax), 2), round(ay + k * (by - ay), 2)))
    assert len(snapshot(page)[0]["points"]) == 5
    victim = page.locator('circle.vertex[data-index="3"]').bounding_box()
    page.mouse.click(victim["x"] + victim["width"] / 2, victim["y"] + victim["height"] / 2, button="right")
    del expected[3]
    assert all(close(a, b) for a, b in zip(snapshot(page)[0]["points"], expected, strict=True))

    # A second part (N), closed with Enter.
    clicks2 = [to_page(t, ix, iy) for ix, iy in [(430, 330), (480, 335), (455, 380)]]
    expected2 = [to_image(t, *c) for c in clicks2]
    page.keyboard.press("n")
    for c in clicks2:
        page.mouse.click(*c)
    page.keyboard.press("Enter")
    assert [p["closed"] for p in snapshot(page)] == [True, True]
    shot(page, "segmentation")

    # Reload mid-task: the work comes back from localStorage.
    before = snapshot(page)
    page.reload()
    assert snapshot(page) == before
    assert page.locator("circle.vertex").count() == 7

    page.click("#submit")
    page.wait_for_selector("#done")
    assert turk_server.posts[0]["path"] == "/mturk/externalSubmit"
    form = turk_server.posts[0]["form"]
    assert form["assignmentId"] == "A-SEG"
    stored = TaskAnswer.objects.get()
    assert form["answerId"] == str(stored.pk) and form["summary"] == "2 parts, 7 vertices"
    poly = Polygon.objects.get(made_by="W-SEG")
    got = [list(zip(p[0::2], p[1::2])) for p in poly.parts]
    assert all(close(a, b) for a, b in zip(got[0], expected, strict=True)), (got, expected)
    assert all(close(a, b) for a, b in zip(got[1], expected2, strict=True)), (got, expected2)
    assert (poly.point_id, poly.assignment_ref, poly.stage) == (point.pk, "A-SEG", "segmentation")


def test_segmentation_flags_a_crossing_outline_and_refuses_short_ones(page, live_server, project, point):
    task = task_item_create(kind="segmentation", project=project, point=point)
    page.goto(live_server.url + task_path(task=task) + mturk_query())
    t = view(page)
    for ix, iy in [(200, 200), (300, 300), (300, 200), (200, 300)]:  # a bow tie
        page.mouse.click(*to_page(t, ix, iy))
    page.keyboard.press("c")
    assert page.locator("polygon.part.bad").count() == 1
    assert page.locator("#submit").is_disabled()
    assert "crosses itself" in page.locator("#status").text_content()
    # Double-click an edge: exactly one vertex is inserted.
    page.keyboard.press("Control+z")
    page.keyboard.press("Delete")  # drop the crossing vertex: a triangle
    page.keyboard.press("Enter")
    assert page.locator("polygon.part").count() == 1 and page.locator("circle.vertex").count() == 3
    page.mouse.dblclick(*to_page(t, 250, 200))  # the middle of the top edge
    pts = snapshot(page)[0]["points"]
    assert len(pts) == 4 and abs(pts[3][1] - pts[2][1]) <= TOL and pts[0][0] < pts[3][0] < pts[2][0]
    assert not page.locator("#submit").is_disabled()
    page.keyboard.press("Control+z")  # the insertion
    page.keyboard.press("Control+z")  # the close
    page.keyboard.press("Control+y")  # the close again ...
    page.keyboard.press("Control+z")  # ... and undone: open triangle, now drop a vertex and try closing
    page.keyboard.press("Delete")
    page.keyboard.press("Enter")
    assert "at least 3 vertices" in page.locator("#error").text_content()
    assert TaskAnswer.objects.count() == 0


def test_spotting_inside_a_hit_frame_with_loupe_move_and_remove(page, live_server, project, images, categories,
                                                                 turk_server, settings):
    settings.TOOLS_FRAME_ANCESTORS = ["'self'", turk_server.url]
    settings.TOOLS_SPOTTING_CROWD_THRESHOLD = 3
    task = task_item_create(kind="spotting", project=project, images=[images[0]], category=categories[4])
    src = live_server.url + task_path(task=task) + mturk_query("A-SPOT", "W-SPOT", turk_server.url)
    turk_server.pages["/hit"] = f'<!doctype html><iframe id=hit style="width:1200px;height:700px;border:0" src="{src}"></iframe>'
    page.goto(turk_server.url + "/hit")
    frame = page.frame_locator("#hit")
    frame.locator(".viewport").wait_for()
    tool = page.frames[1]
    settle(tool)
    t = tool.eval_on_selector(".viewport", "e => ({scale: +e.dataset.scale, tx: +e.dataset.tx, ty: +e.dataset.ty})")
    box = page.locator("#hit").bounding_box()
    vp = frame.locator(".viewport").bounding_box()
    t.update(x=vp["x"], y=vp["y"])
    targets = [(100, 100), (320, 240), (500, 400), (600, 50)]
    clicks = [to_page(t, *p) for p in targets]
    expected = [to_image(t, *c) for c in clicks]
    assert frame.locator("#crowd").is_disabled()
    for c in clicks:
        page.mouse.click(*c)
    page.mouse.move(clicks[1][0] + 30, clicks[1][1] + 30)
    assert frame.locator(".loupe").is_visible()
    # Move point 0, remove point 3 with right-click and point 2 with Delete while hovered.
    page.mouse.move(*clicks[0])
    page.mouse.down()
    page.mouse.move(clicks[0][0] + 20, clicks[0][1] + 25, steps=5)
    page.mouse.up()
    expected[0] = to_image(t, clicks[0][0] + 20, clicks[0][1] + 25)
    page.mouse.click(*clicks[3], button="right")
    page.mouse.move(*clicks[2])
    page.keyboard.press("Delete")
    assert frame.locator("circle.spot").count() == 2
    page.keyboard.press("Control+z")  # the Delete comes back
    assert frame.locator("circle.spot").count() == 3
    assert not frame.locator("#crowd").is_disabled()  # three points: "too many to count" allowed
    frame.locator("#crowd").check()
    shot(page, "spotting")
    frame.locator("#submit").click()
    frame.locator("#done").wait_for()
    assert turk_server.posts[0]["form"]["assignmentId"] == "A-SPOT"
    got = sorted(InstancePoint.objects.filter(made_by="W-SPOT").values_list("x", "y", "is_crowd"))
    want = sorted((x, y, True) for x, y in expected[:3])
    assert len(got) == 3 and all(close(g[:2], w[:2]) and g[2] for g, w in zip(got, want))
    assert box["width"] == 1200


def test_categories_direct_user_keyboard_and_escaped_names(page, live_server, project, images, categories):
    login(page, live_server)
    task = task_item_create(kind="categories", project=project, images=images)
    page.goto(live_server.url + task_path(task=task))
    groups = [g.get_attribute("data-group") for g in page.locator(".super").all()]
    assert groups == ["person", "vehicle", "animal", "indoor"]
    assert page.locator(".super svg.icon").count() == 4
    page.keyboard.press("3")  # animal group
    page.keyboard.press("2")  # dog
    page.keyboard.press("Escape")
    page.keyboard.press("2")  # vehicle
    page.keyboard.press("1")  # bicycle
    page.keyboard.press("2")  # car
    page.keyboard.press("2")  # car again: off
    assert page.locator("#submit").is_disabled()  # two images not seen yet
    page.keyboard.press("j")
    page.keyboard.press("Escape")
    page.keyboard.press("4")  # indoor: the category with markup in its name
    assert page.locator("#cats .name").first.text_content() == "<img src=x onerror=alert(1)>"
    assert page.locator("#cats img").count() == 0
    page.keyboard.press("1")
    page.keyboard.press("ArrowRight")
    page.reload()  # the marks and the images seen survive a reload
    assert page.locator("#status").text_content() == "3/3 images seen"
    page.keyboard.press("k")
    assert page.locator("#chips").text_content() == "<img src=x onerror=alert(1)> ×"
    shot(page, "categories")
    page.click("#submit")
    page.wait_for_selector("body[data-submitted]")
    assert "Thank you" in page.locator("#notice").text_content()
    present = set(ImageLabel.objects.filter(present=True).values_list("image_id", "category__name"))
    assert present == {(images[0].pk, "dog"), (images[0].pk, "bicycle"), (images[1].pk, "<img src=x onerror=alert(1)>")}
    assert ImageLabel.objects.filter(made_by="alice").count() == 3 * len(categories)


def test_verification_keyboard_all_decided_before_submit(page, live_server, project, images, categories, turk_server):
    polys = [make_polygon(images[i % 3], categories[i % 5], [50 + i * 20, 60, 250, 80 + i * 10, 200, 300, 60, 280])
             for i in range(5)]
    task = task_item_create(kind="verification", project=project, polygons=polys)
    page.goto(live_server.url + task_path(task=task) + mturk_query("A-VER", "W-VER", turk_server.url))
    assert page.locator(".card").count() == 5
    page.keyboard.press("a")  # 1 accepted, focus moves to 2
    page.keyboard.press("r")  # 2 rejected
    page.keyboard.press("ArrowRight")  # skip 3
    page.keyboard.press("a")  # 4 accepted
    assert page.locator("#submit").is_disabled()
    page.keyboard.press("a")  # 5 accepted
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("r")  # 3 rejected
    assert not page.locator("#submit").is_disabled()
    shot(page, "verification")
    page.click("#submit")
    page.wait_for_selector("#done")
    votes = dict(VerificationVote.objects.values_list("polygon_id", "accept"))
    assert votes == {polys[0].pk: True, polys[1].pk: False, polys[2].pk: False, polys[3].pk: True, polys[4].pk: True}


def test_training_fail_shows_iou_then_retry_after_delay_passes(page, live_server, project, images, categories,
                                                               monkeypatch, settings, turk_server):
    settings.TOOLS_TRAINING_RETRY_MINUTES = 10
    now = [timezone.now()]
    monkeypatch.setattr(clock, "now", lambda: now[0])
    gold = make_polygon(images[0], categories[3], [200, 150, 440, 150, 440, 330, 200, 330])
    task = task_item_create(kind="training", project=project, polygons=[gold])
    url = live_server.url + task_path(task=task) + mturk_query("A-TR", "W-TR", turk_server.url)

    def draw(corners):
        t = view(page)
        for c in corners:
            page.mouse.click(*to_page(t, *c))
        page.keyboard.press("Enter")

    page.goto(url)
    draw([(200, 150), (300, 150), (300, 330), (200, 330)])  # the left part only
    page.click("#submit")
    page.wait_for_selector("#verdict")
    assert "Not yet" in page.locator("#verdict").text_content()
    assert page.locator("#ious li.fail").text_content().startswith("Object 1: IoU 0.4")
    assert page.locator("#submit").is_disabled()
    result = TrainingResult.objects.get()
    assert not result.passed and result.worker_id == "W-TR"
    shot(page, "training")

    now[0] += timedelta(minutes=11)
    page.evaluate("localStorage.clear()")
    page.reload()
    assert "Not yet" in page.locator("#verdict").text_content()  # the last result is still shown
    draw([(201, 151), (439, 150), (440, 329), (200, 331)])
    assert not turk_server.posts  # a failed attempt does not hand the assignment back
    page.click("#submit")
    page.wait_for_selector("#done")  # a pass does
    assert turk_server.posts[0]["form"]["assignmentId"] == "A-TR"
    assert list(TrainingResult.objects.order_by("created_at").values_list("passed", flat=True)) == [False, True]


def test_preview_shows_the_task_read_only_and_cannot_submit(page, live_server, project, point):
    task = task_item_create(kind="segmentation", project=project, point=point)
    page.goto(live_server.url + task_path(task=task) + mturk_query("ASSIGNMENT_ID_NOT_AVAILABLE"))
    assert "accept the HIT" in page.locator("#notice").text_content()
    assert page.locator("#submit").is_disabled()
    t = view(page)
    for c in [(100, 100), (200, 100), (200, 200)]:
        page.mouse.click(*to_page(t, *c))
    assert page.locator("circle.vertex").count() == 0
    reply = page.evaluate(
        """async () => { const r = await fetch(location.pathname + 'answer', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({host: {assignmentId:
        'ASSIGNMENT_ID_NOT_AVAILABLE', workerId: 'W1', hitId: 'H1'}, answer: {}})}); return [r.status, await r.json()]; }"""
    )
    assert reply[0] == 400 and "preview" in reply[1]["error"]
    assert TaskAnswer.objects.count() == 0


def test_forged_answers_are_refused_with_a_message_and_nothing_stored(page, live_server, project, point, images):
    task = task_item_create(kind="segmentation", project=project, point=point, assignment_id="A-OWN")
    page.goto(live_server.url + task_path(task=task) + mturk_query("A-OWN"))
    square = [100, 100, 300, 100, 300, 300, 100, 300]
    good = {"schema": "annotator.answer/segmentation", "version": 1, "point": point.pk, "parts": [square]}
    forged = {
        "wrong instance": ({**good, "point": point.pk + 99}, "not the instance of this task"),
        "NaN": (json.dumps({**good, "parts": [[100, 100, 300, 100, 300, 300]]}).replace("300, 300]", "NaN, 300]"),
                "finite number"),
        "outside the image": ({**good, "parts": [[100, 100, 900, 100, 300, 300]]}, "outside the 640x480 image"),
        "bad schema version": ({**good, "version": 7}, "version 7 is not supported"),
        "other assignment": (good, "belongs to another assignment"),
    }
    for name, (answer, message) in forged.items():
        assignment = "A-OTHER" if name == "other assignment" else "A-OWN"
        body = answer if isinstance(answer, str) else json.dumps(answer)
        raw = f'{{"host": {{"assignmentId": "{assignment}", "workerId": "W1", "hitId": "H1"}}, "answer": {body}}}'
        status, error = page.evaluate(
            "async (raw) => { const r = await fetch(location.pathname + 'answer', {method: 'POST', headers: "
            "{'Content-Type': 'application/json'}, body: raw}); return [r.status, (await r.json()).error]; }", raw)
        assert status == 400 and message in error, (name, error)
    assert TaskAnswer.objects.count() == 0 and Polygon.objects.count() == 0

    # The page shows the server's refusal: the same task opened under another assignment.
    page.goto(live_server.url + task_path(task=task) + mturk_query("A-OTHER"))
    t = view(page)
    for c in [(100, 100), (300, 100), (300, 300)]:
        page.mouse.click(*to_page(t, *c))
    page.keyboard.press("Enter")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#error").text_content() == "This task belongs to another assignment."
    assert TaskAnswer.objects.count() == 0 and Polygon.objects.count() == 0
    assert math.isfinite(view(page)["scale"])
