"""Hostile answers fuzzed with hypothesis against the real answer endpoint
(POST /tasks/<kind>/<token>/answer), for every tool: each is refused with a 4xx and a message,
never a server error, and nothing is stored (every table an answer writes is counted)."""
from __future__ import annotations

import json
import math
import uuid

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from datasets.models import ImageLabel, InstancePoint, Polygon
from frontend.models import TaskAnswer, TrainingResult, VerificationVote
from frontend.services import task_item_create, task_path
from tests.frontend.conftest import make_polygon

pytestmark = pytest.mark.django_db
FUZZ = hsettings(max_examples=60, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                        HealthCheck.data_too_large])
SQUARE = [100.0, 100.0, 300.0, 100.0, 300.0, 300.0, 100.0, 300.0]
KINDS = ["segmentation", "spotting", "categories", "verification", "training"]


class Tools:
    """One task per tool, its answer URL and a valid answer for it."""

    def __init__(self, project, images, categories, point):
        gold = make_polygon(images[1], categories[1], SQUARE)
        other = make_polygon(images[2], categories[2], SQUARE)
        self.tasks = {
            "segmentation": task_item_create(kind="segmentation", project=project, point=point),
            "spotting": task_item_create(kind="spotting", project=project, images=[images[0]], category=categories[0]),
            "categories": task_item_create(kind="categories", project=project, images=images[:2]),
            "verification": task_item_create(kind="verification", project=project, polygons=[gold, other]),
            "training": task_item_create(kind="training", project=project, polygons=[gold]),
        }
        self.valid = {
            "segmentation": {"point": point.pk, "parts": [SQUARE]},
            "spotting": {"image": images[0].pk, "category": categories[0].pk, "crowd": False,
                         "points": [{"x": 10.0, "y": 20.0}, {"x": 30.5, "y": 40.0}]},
            "categories": {"images": [{"image": images[0].pk, "present": [categories[0].pk]},
                                      {"image": images[1].pk, "present": []}]},
            "verification": {"decisions": [{"polygon": gold.pk, "accept": True},
                                           {"polygon": other.pk, "accept": False}]},
            "training": {"attempt": 1, "items": [{"item": gold.pk, "parts": [SQUARE]}]},
        }
        self.client = Client()

    def answer(self, kind: str) -> dict:
        return {"schema": f"annotator.answer/{kind}", "version": 1, **json.loads(json.dumps(self.valid[kind]))}

    def post_raw(self, kind: str, raw: str | bytes):
        return self.client.post(task_path(task=self.tasks[kind]) + "answer", data=raw, content_type="application/json")

    def post(self, kind: str, answer, host: dict | None = None):
        host = host or {"assignmentId": f"A-{uuid.uuid4().hex[:10]}", "hitId": "H1", "workerId": "W-fuzz"}
        return self.post_raw(kind, json.dumps({"host": host, "answer": answer}))


def stored() -> tuple[int, ...]:
    return (TaskAnswer.objects.count(), ImageLabel.objects.count(), InstancePoint.objects.count(),
            Polygon.objects.count(), VerificationVote.objects.count(), TrainingResult.objects.count())


@pytest.fixture
def tools(project, images, categories, point):
    return Tools(project, images, categories, point)


def assert_refused(response, before):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    error = response.json()["error"]
    assert isinstance(error, str) and 10 < len(error) <= 500 and "Traceback" not in error
    assert stored() == before


def test_the_valid_answers_are_stored(tools):
    """The fuzzing below starts from answers that are accepted, so a refusal is the mutation's doing."""
    for kind in KINDS:
        assert tools.post(kind, tools.answer(kind)).status_code == 201, kind
    assert TaskAnswer.objects.count() == len(KINDS)


# --- Strategies ----------------------------------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=20),
                      st.floats(allow_nan=True, allow_infinity=True))
any_json = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Not a usable coordinate: not finite, too large for any image, negative, or not a number at all.
bad_coordinate = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(min_value=2**53 + 1, max_value=10**400), st.integers(min_value=-(10**400), max_value=-1),
    st.floats(min_value=1e5, allow_nan=False), st.floats(max_value=-1e-3, allow_nan=False),
    st.none(), st.booleans(), st.text(max_size=10), st.lists(json_leaf, max_size=3),
    st.dictionaries(st.text(max_size=5), json_leaf, max_size=2),
)
not_a_list = any_json.filter(lambda v: not isinstance(v, list))
not_an_id = any_json.filter(lambda v: isinstance(v, bool) or not isinstance(v, int) or v < 1) | \
    st.integers(min_value=2**53 + 1, max_value=10**400)
unknown_version = any_json.filter(lambda v: not (isinstance(v, (int, float)) and v == 1)) | st.integers(2, 10**6)


def nested(depth: int, leaf=0):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def coordinate_slots(kind: str, answer: dict) -> list[tuple[list | dict, object]]:
    """Where a coordinate sits in an answer of this kind: (container, index or key)."""
    if kind == "segmentation":
        return [(answer["parts"][0], i) for i in range(len(answer["parts"][0]))]
    if kind == "training":
        return [(answer["items"][0]["parts"][0], i) for i in range(len(answer["items"][0]["parts"][0]))]
    if kind == "spotting":
        return [(p, axis) for p in answer["points"] for axis in ("x", "y")]
    return []


# --- The fuzzing -----------------------------------------------------------------------------------

@FUZZ
@given(kind=st.sampled_from(["segmentation", "training", "spotting"]), slot=st.integers(0, 15), value=bad_coordinate)
def test_bad_numbers_in_coordinates_are_refused(tools, kind, slot, value):
    answer = tools.answer(kind)
    slots = coordinate_slots(kind, answer)
    container, key = slots[slot % len(slots)]
    container[key] = value
    before = stored()
    assert_refused(tools.post(kind, answer), before)


@FUZZ
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_wrong_types_and_missing_fields_are_refused(tools, kind, data):
    answer = tools.answer(kind)
    field = data.draw(st.sampled_from(sorted(tools.valid[kind])))
    if field == "attempt":  # optional; an attempt other than 1 is refused below, by type
        answer[field] = data.draw(any_json.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool)
                                                                 and v == 1)))
    elif data.draw(st.booleans()):
        del answer[field]
    elif isinstance(answer[field], list):
        answer[field] = data.draw(not_a_list)
    elif isinstance(answer[field], bool):
        answer[field] = data.draw(any_json.filter(lambda v: not isinstance(v, bool)))
    else:
        answer[field] = data.draw(not_an_id)
    before = stored()
    assert_refused(tools.post(kind, answer), before)


@FUZZ
@given(kind=st.sampled_from(KINDS), version=unknown_version, schema=st.none() | st.text(max_size=40))
def test_unknown_schemas_and_versions_are_refused(tools, kind, version, schema):
    answer = tools.answer(kind)
    answer["version"] = version
    before = stored()
    response = tools.post(kind, answer)
    assert_refused(response, before)
    assert "version" in response.json()["error"]
    if schema != f"annotator.answer/{kind}":
        answer = {**tools.answer(kind), "schema": schema}
        response = tools.post(kind, answer)
        assert_refused(response, before)
        assert "schema" in response.json()["error"]


@FUZZ
@given(kind=st.sampled_from(["segmentation", "training"]), vertices=st.integers(5001, 40_000))
def test_huge_vertex_counts_are_refused(tools, kind, vertices):
    ring = [v for i in range(vertices) for v in (320 + 100 * math.cos(i / vertices * 2 * math.pi),
                                                 240 + 100 * math.sin(i / vertices * 2 * math.pi))]
    answer = tools.answer(kind)
    if kind == "segmentation":
        answer["parts"] = [ring]
    else:
        answer["items"][0]["parts"] = [ring]
    before = stored()
    response = tools.post(kind, answer)
    assert_refused(response, before)
    assert "more than the limit of 5000" in response.json()["error"]


def test_many_parts_and_points_are_refused(tools, settings):
    before = stored()
    answer = tools.answer("segmentation")
    answer["parts"] = [SQUARE] * 21
    assert_refused(tools.post("segmentation", answer), before)
    answer = tools.answer("spotting")
    answer["points"] = [{"x": 1.0, "y": 1.0}] * (settings.TOOLS_SPOTTING_MAX_POINTS + 1)
    assert "more than the limit" in tools.post("spotting", answer).json()["error"]
    assert stored() == before


@FUZZ
@given(kind=st.sampled_from(KINDS), depth=st.integers(2, 200_000), where=st.sampled_from(["answer", "field", "host"]))
def test_deep_nesting_is_refused(tools, kind, depth, where):
    answer = tools.answer(kind)
    field = sorted(tools.valid[kind])[0]
    before = stored()
    if depth > 500:  # deeper than Python's own encoder goes: written out by hand
        inner = "[" * depth + "0" + "]" * depth
        host = '{"assignmentId": "A-deep", "hitId": "H", "workerId": "W"}'
        if where == "answer":
            raw = f'{{"host": {host}, "answer": {inner}}}'
        elif where == "field":
            raw = json.dumps({"host": json.loads(host), "answer": {**answer, field: 0}}).replace(
                f'"{field}": 0', f'"{field}": {inner}')
        else:
            raw = f'{{"host": {{"assignmentId": {inner}}}, "answer": {json.dumps(answer)}}}'
        response = tools.post_raw(kind, raw)
    elif where == "answer":
        response = tools.post(kind, nested(depth))
    elif where == "field":
        response = tools.post(kind, {**answer, field: nested(depth)})
    else:
        response = tools.post(kind, answer, host={"assignmentId": nested(depth), "workerId": "W", "hitId": "H"})
    assert_refused(response, before)


@FUZZ
@given(kind=st.sampled_from(KINDS), body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | any_json.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies_are_refused(tools, kind, body):
    before = stored()
    assert_refused(tools.post_raw(kind, body), before)


@FUZZ
@given(kind=st.sampled_from(KINDS), field=st.sampled_from(["assignmentId", "workerId", "hitId"]),
       value=any_json.filter(lambda v: not isinstance(v, str)))
def test_host_fields_of_the_wrong_type_are_refused(tools, kind, field, value):
    host = {"assignmentId": "A-host", "hitId": "H", "workerId": "W", field: value}
    before = stored()
    assert_refused(tools.post(kind, tools.answer(kind), host=host), before)


def test_a_huge_value_is_not_sent_back_whole(tools):
    before = stored()
    response = tools.post("segmentation", {**tools.answer("segmentation"), "schema": "x" * 1_000_000})
    assert_refused(response, before)
    assert response.json()["error"].startswith("Unknown answer schema 'xxx") and len(response.content) < 1000


def test_a_direct_submission_without_a_session_is_refused(tools):
    before = stored()
    response = tools.post("segmentation", tools.answer("segmentation"), host={"assignmentId": ""})
    assert response.status_code == 403 and "Sign in" in response.json()["error"]
    assert stored() == before


def test_a_preview_cannot_submit(tools):
    before = stored()
    for kind in KINDS:
        host = {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "H", "workerId": "W"}
        response = tools.post(kind, tools.answer(kind), host=host)
        assert_refused(response, before)
        assert "preview" in response.json()["error"]
