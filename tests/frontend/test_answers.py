"""Task items, answer validation and storage, training scoring, and the pages' HTTP behaviour."""
from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from datasets.models import ImageLabel, InstancePoint, Polygon, Stage
from frontend import clock
from frontend.answers import AnswerError
from frontend.models import Kind, TaskAnswer, TaskItem, TrainingResult, VerificationVote
from frontend.services import (
    TaskError, answer_submit, outline_iou, task_create, task_from_token, task_item_create, task_path, task_token,
)
from tests.frontend.conftest import make_image, make_polygon

pytestmark = pytest.mark.django_db
SQUARE = [100.0, 100.0, 300.0, 100.0, 300.0, 300.0, 100.0, 300.0]


def submit(task, answer, assignment="A1", worker="W1"):
    return answer_submit(task=task, worker_id=worker, assignment_id=assignment, hit_id="H1", answer=answer)


def seg_answer(task, parts, **kw):
    return {"schema": "annotator.answer/segmentation", "version": 1, "point": task.point_id, "parts": parts, **kw}


# --- Task items ----------------------------------------------------------------------------------

def test_task_create_returns_a_signed_url_that_resolves(project, images, categories, settings):
    settings.PUBLIC_BASE_URL = "https://annotator.example"
    url = task_create(kind="spotting", project=project, images=[images[0]], category=categories[0])
    assert url.startswith("https://annotator.example/tasks/spotting/")
    task = TaskItem.objects.get()
    assert url.endswith(task_path(task=task))
    token = task_token(task=task)
    assert task_from_token(kind="spotting", token=token) == task
    assert task_from_token(kind="segmentation", token=token) is None  # kind is signed in
    assert task_from_token(kind="spotting", token=token.replace(f"-{task.pk}:", f"-{task.pk + 1}:")) is None


def test_task_items_must_belong_to_the_project(project, images, categories, point):
    other = make_image(type(project).objects.create(name="Other", owner=project.owner), seed=9)
    with pytest.raises(TaskError, match="not images of this project"):
        task_item_create(kind="categories", project=project, images=[images[0], other])
    with pytest.raises(TaskError, match="exactly one image"):
        task_item_create(kind="spotting", project=project, images=images, category=categories[0])
    with pytest.raises(TaskError, match="Unknown tool"):
        task_item_create(kind="drawing", project=project, images=images)
    with pytest.raises(TaskError, match="spotted point"):
        task_item_create(kind="segmentation", project=project)
    assert TaskItem.objects.count() == 0


def test_make_task_links_prints_a_link_per_tool(project, images, categories):
    import io

    out = io.StringIO()
    call_command("make_task_links", project.name, "--mturk", stdout=out)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == Kind.values
    assert all("/tasks/" in line and "assignmentId=" in line for line in lines)


# --- Each tool's answer --------------------------------------------------------------------------

def test_categories_answer_writes_a_label_per_image_and_category(project, images, categories):
    task = task_item_create(kind="categories", project=project, images=images[:2])
    answer = {"schema": "annotator.answer/categories", "version": 1, "images": [
        {"image": images[1].pk, "present": [categories[3].pk]},
        {"image": images[0].pk, "present": [categories[0].pk, categories[1].pk]},
    ]}
    stored, created = submit(task, answer)
    assert created and stored.summary == "2 images, 3 categories marked"
    assert ImageLabel.objects.count() == 2 * len(categories)
    present = set(ImageLabel.objects.filter(present=True).values_list("image_id", "category_id"))
    assert present == {(images[0].pk, categories[0].pk), (images[0].pk, categories[1].pk), (images[1].pk, categories[3].pk)}
    label = ImageLabel.objects.first()
    assert (label.made_by, label.assignment_ref, label.stage, label.schema_version) == ("W1", "A1", Stage.CATEGORIES, 1)


def test_spotting_answer_and_crowd_threshold(project, images, categories, settings):
    settings.TOOLS_SPOTTING_CROWD_THRESHOLD = 3
    task = task_item_create(kind="spotting", project=project, images=[images[0]], category=categories[3])
    base = {"schema": "annotator.answer/spotting", "version": 1, "image": images[0].pk, "category": categories[3].pk}
    with pytest.raises(AnswerError, match="at least 3 points"):
        submit(task, {**base, "points": [{"x": 1, "y": 2}], "crowd": True})
    points = [{"x": 10.5, "y": 20.25}, {"x": 640, "y": 480}, {"x": 0, "y": 0}]
    stored, _ = submit(task, {**base, "points": points, "crowd": True})
    assert sorted(InstancePoint.objects.values_list("x", "y", "is_crowd")) == [(0, 0, True), (10.5, 20.25, True), (640, 480, True)]
    assert stored.answer["points"] == points


def test_segmentation_answer_writes_a_polygon(project, point):
    task = task_item_create(kind="segmentation", project=project, point=point)
    stored, created = submit(task, seg_answer(task, [SQUARE, [400, 400, 500, 400, 450, 470]]))
    poly = Polygon.objects.get()
    assert poly.point == point and poly.parts[0] == SQUARE
    assert poly.area == pytest.approx(200 * 200 + 100 * 70 / 2)
    assert poly.bbox == [100, 100, 400, 370]
    assert (poly.made_by, poly.assignment_ref, poly.stage) == ("W1", "A1", Stage.SEGMENTATION)


def test_verification_needs_every_outline_decided(project, images, categories):
    p1 = make_polygon(images[0], categories[0], SQUARE)
    p2 = make_polygon(images[1], categories[1], SQUARE)
    task = task_item_create(kind="verification", project=project, polygons=[p1, p2])
    base = {"schema": "annotator.answer/verification", "version": 1}
    with pytest.raises(AnswerError, match=f"Outline {p2.pk} is not decided"):
        submit(task, {**base, "decisions": [{"polygon": p1.pk, "accept": True}]})
    submit(task, {**base, "decisions": [{"polygon": p2.pk, "accept": False}, {"polygon": p1.pk, "accept": True}]})
    assert sorted(VerificationVote.objects.values_list("polygon_id", "accept", "made_by")) == [
        (p1.pk, True, "W1"), (p2.pk, False, "W1")]


# --- Refusals: nothing is stored -----------------------------------------------------------------

@pytest.mark.parametrize("mutate, message", [
    (lambda a, t: a.update(version=2), "version 2 is not supported"),
    (lambda a, t: a.update(schema="annotator.answer/spotting"), "Unknown answer schema"),
    (lambda a, t: a.update(parts=[[100, 100, math.nan, 100, 300, 300]]), "finite number"),
    (lambda a, t: a.update(parts=[[100, 100, 700, 100, 300, 300]]), "outside the 640x480 image"),
    (lambda a, t: a.update(parts=[[100, 100, 300, 100]]), "at least 3 vertices"),
    (lambda a, t: a.update(parts=[[0, 0, 100, 100, 100, 0, 0, 100]]), "crosses itself"),
    (lambda a, t: a.update(parts=[["1", 2, 3, 4, 5, 6]]), "finite number"),
    (lambda a, t: a.update(parts=[]), "at least one part"),
    (lambda a, t: a.update(point=t.point_id + 1000), "not the instance of this task"),
    (lambda a, t: a.update(parts="nope"), "must be a list"),
])
def test_forged_segmentation_answers_are_refused(project, point, mutate, message):
    task = task_item_create(kind="segmentation", project=project, point=point)
    answer = seg_answer(task, [SQUARE])
    mutate(answer, task)
    with pytest.raises(AnswerError, match=message):
        submit(task, answer)
    assert TaskAnswer.objects.count() == 0 and Polygon.objects.count() == 0


def test_vertex_limit(project, point, settings):
    settings.TOOLS_MAX_VERTICES_PER_PART = 5
    task = task_item_create(kind="segmentation", project=project, point=point)
    ring = [v for i in range(6) for v in (320 + 100 * math.cos(i), 240 + 100 * math.sin(i))]
    with pytest.raises(AnswerError, match="more than the limit of 5"):
        submit(task, seg_answer(task, [ring]))


def test_wrong_image_other_assignment_and_preview_are_refused(project, images, categories):
    task = task_item_create(kind="spotting", project=project, images=[images[0]], category=categories[0],
                            assignment_id="ASSIGNED")
    answer = {"schema": "annotator.answer/spotting", "version": 1, "image": images[1].pk,
              "category": categories[0].pk, "points": [], "crowd": False}
    with pytest.raises(AnswerError, match="another assignment"):
        submit(task, answer, assignment="A-OTHER")
    with pytest.raises(AnswerError, match="preview"):
        submit(task, answer, assignment="ASSIGNMENT_ID_NOT_AVAILABLE")
    with pytest.raises(AnswerError, match="not the image of this task"):
        submit(task, answer, assignment="ASSIGNED")
    assert TaskAnswer.objects.count() == 0


def test_a_failure_while_writing_records_stores_nothing(project, point, monkeypatch):
    task = task_item_create(kind="segmentation", project=project, point=point)

    def boom(**kwargs):
        Polygon.objects.create(image=point.image, category=point.category, parts=[SQUARE], area=1, bbox=[0, 0, 1, 1],
                               stage=Stage.SEGMENTATION, made_by="W1")
        raise RuntimeError("disk full")

    monkeypatch.setattr("frontend.services._write_records", boom)
    with pytest.raises(RuntimeError):
        submit(task, seg_answer(task, [SQUARE]))
    assert TaskAnswer.objects.count() == 0 and Polygon.objects.count() == 0


def test_a_repeated_submission_returns_the_stored_answer(project, point):
    task = task_item_create(kind="segmentation", project=project, point=point)
    first, created = submit(task, seg_answer(task, [SQUARE]))
    again, created_again = submit(task, seg_answer(task, [[1, 1, 50, 1, 50, 50]]))
    assert created and not created_again and again.pk == first.pk
    assert Polygon.objects.count() == 1 and TaskAnswer.objects.count() == 1
    with pytest.raises(AnswerError, match="another worker"):
        submit(task, seg_answer(task, [SQUARE]), worker="W2")
    second, created = submit(task, seg_answer(task, [SQUARE]), assignment="A2", worker="W2")
    assert created and Polygon.objects.count() == 2


# --- Training ------------------------------------------------------------------------------------

def test_iou():
    assert outline_iou([SQUARE], [SQUARE]) == pytest.approx(1.0)
    half = [100.0, 100.0, 200.0, 100.0, 200.0, 300.0, 100.0, 300.0]
    assert outline_iou([half], [SQUARE]) == pytest.approx(0.5)


def test_training_scores_records_and_holds_back_a_retry(project, images, categories, settings, monkeypatch):
    settings.TOOLS_TRAINING_IOU = 0.75
    settings.TOOLS_TRAINING_RETRY_MINUTES = 10
    now = [timezone.now()]
    monkeypatch.setattr(clock, "now", lambda: now[0])
    gold = make_polygon(images[0], categories[3], SQUARE)
    task = task_item_create(kind="training", project=project, polygons=[gold])
    close = [102.0, 98.0, 298.0, 101.0, 300.0, 297.0, 99.0, 302.0]
    loose = [100.0, 100.0, 200.0, 100.0, 200.0, 300.0, 100.0, 300.0]
    answer = lambda parts, attempt: {"schema": "annotator.answer/training", "version": 1, "attempt": attempt,
                                     "items": [{"item": gold.pk, "parts": [parts]}]}
    first, _ = submit(task, answer(loose, 1))
    result = TrainingResult.objects.get(answer=first)
    assert not result.passed and result.ious == [{"item": gold.pk, "iou": 0.5, "passed": False}]
    with pytest.raises(AnswerError, match="try the training again from"):
        submit(task, answer(close, 2))
    now[0] += timedelta(minutes=10, seconds=1)
    second, created = submit(task, answer(close, 2))
    assert created and TrainingResult.objects.get(answer=second).passed
    assert TrainingResult.objects.filter(worker_id="W1", passed=True).count() == 1
    # A repeat of attempt 1 returns the stored attempt, it does not score again.
    again, created = submit(task, answer(close, 1))
    assert not created and again.pk == first.pk


def test_training_page_never_sends_the_known_outline(project, images, categories, client):
    gold = make_polygon(images[0], categories[3], [111.5, 122.5, 333.5, 122.5, 333.5, 344.5])
    task = task_item_create(kind="training", project=project, polygons=[gold])
    html = client.get(task_path(task=task) + "?assignmentId=A&hitId=H&workerId=W&turkSubmitTo=http://x").content.decode()
    assert "333.5" not in html and "111.5" not in html
    assert '"point"' in html


# --- HTTP: pages, headers, the answer endpoint ---------------------------------------------------

def test_task_page_may_be_framed_by_configured_origins_only(project, point, client, settings):
    settings.TOOLS_FRAME_ANCESTORS = ["'self'", "http://127.0.0.1:8000", "https://workersandbox.mturk.com"]
    task = task_item_create(kind="segmentation", project=project, point=point)
    response = client.get(task_path(task=task) + "?assignmentId=A&hitId=H&workerId=W&turkSubmitTo=http://x")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == (
        "frame-ancestors 'self' http://127.0.0.1:8000 https://workersandbox.mturk.com; "
        "script-src 'self'; object-src 'none'; base-uri 'none'")
    assert "X-Frame-Options" not in response
    assert client.get("/").get("X-Frame-Options") == "DENY"


def test_task_page_needs_a_hit_or_a_signed_in_user(project, point, client):
    task = task_item_create(kind="segmentation", project=project, point=point)
    response = client.get(task_path(task=task))
    assert response.status_code == 302 and "login" in response["Location"]
    assert client.get(task_path(task=task).replace(":", ":x")).status_code == 404


def test_answer_endpoint_refuses_with_a_message_and_stores_once(project, point):
    client = Client()
    task = task_item_create(kind="segmentation", project=project, point=point)
    url = task_path(task=task) + "answer"
    host = {"assignmentId": "A1", "hitId": "H1", "workerId": "W1"}
    post = lambda body: client.post(url, data=json.dumps(body), content_type="application/json")
    bad = post({"host": host, "answer": seg_answer(task, [[100, 100, 900, 100, 300, 300]])})
    assert bad.status_code == 400 and "outside the 640x480 image" in bad.json()["error"]
    assert client.post(url, data="{nope", content_type="application/json").json()["error"] == "The answer is not valid JSON."
    ok = post({"host": host, "answer": seg_answer(task, [SQUARE])})
    assert ok.status_code == 201 and ok.json()["created"] is True
    again = post({"host": host, "answer": seg_answer(task, [SQUARE])})
    assert again.status_code == 200 and again.json()["answer"] == ok.json()["answer"]
    assert Polygon.objects.count() == 1


def test_direct_submission_needs_sign_in_and_csrf(project, point):
    task = task_item_create(kind="segmentation", project=project, point=point)
    url = task_path(task=task) + "answer"
    body = json.dumps({"host": {}, "answer": seg_answer(task, [SQUARE])})
    client = Client(enforce_csrf_checks=True)
    assert client.post(url, data=body, content_type="application/json").status_code == 403
    get_user_model().objects.create_user("alice", password="pw-alice-123")
    client.login(username="alice", password="pw-alice-123")
    refused = client.post(url, data=body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    client.get(task_path(task=task))
    token = client.cookies["csrftoken"].value
    ok = client.post(url, data=body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 201
    assert Polygon.objects.get().made_by == "alice"


def test_admin_lists_the_tools_records(project, point, admin_client):
    task = task_item_create(kind="segmentation", project=project, point=point)
    submit(task, seg_answer(task, [SQUARE]))
    for name in ("taskitem", "taskanswer", "trainingresult", "verificationvote"):
        assert admin_client.get(f"/admin/frontend/{name}/").status_code == 200
    page = admin_client.get("/admin/frontend/taskitem/").content.decode()
    assert task_path(task=task) in page
    assert admin_client.get("/admin/frontend/taskanswer/add/").status_code == 403
