"""The simulated crowd's parts: scenes with exact truth, worker profiles, and the quality metrics.

Every answer of every profile goes through the server's own validator (``answer_clean``), and the
metrics are checked on cases small enough to work out by hand.
"""
from __future__ import annotations

import dataclasses
import io
import math
from itertools import combinations

import numpy as np
import pytest
from PIL import Image as PILImage
from shapely.geometry import Point
from shapely.geometry import Polygon as ShapelyPolygon

from crowd.simulation.metrics import category_scores, instance_counts, outline_iou, outline_scores
from crowd.simulation.scenes import Scene, TruthObject, scenes_generate
from crowd.simulation.workers import PROFILES, SimWorker, crowd_mix
from datasets.services.geometry import outline_check

CATEGORIES = ["person", "bicycle", "car", "cat", "dog", "bird", "boat", "cup"]
IDS = {name: i + 1 for i, name in enumerate(CATEGORIES)}


def shape(flat):
    return ShapelyPolygon(list(zip(flat[0::2], flat[1::2])))


def square(x, y, side):
    return [x, y, x + side, y, x + side, y + side, x, y + side]


@pytest.fixture(scope="module")
def scenes():
    return scenes_generate(n=120, categories=CATEGORIES, seed=11)


def worker(profile: str, seed: int = 1, **changes) -> SimWorker:
    return SimWorker(id=f"sim-{profile}-01", profile=dataclasses.replace(PROFILES[profile], **changes),
                     rng=np.random.default_rng(seed))


# --- Scenes ----------------------------------------------------------------------------------------

def test_scenes_are_the_same_for_a_seed_and_differ_across_seeds():
    a = scenes_generate(n=15, categories=CATEGORIES, seed=4)
    b = scenes_generate(n=15, categories=CATEGORIES, seed=4)
    c = scenes_generate(n=15, categories=CATEGORIES, seed=5)
    assert a == b
    assert [s.jpeg() for s in a[:3]] == [s.jpeg() for s in b[:3]]
    assert a != c
    assert [s.name for s in a] == [f"scene-{i:05d}" for i in range(15)]


def test_objects_are_valid_polygons_inside_the_image_and_never_overlap(scenes):
    for scene in scenes:
        assert (scene.width, scene.height) == (320, 240)
        shapes = []
        for obj in scene.objects:
            assert obj.category in CATEGORIES
            assert len(obj.parts) == 1
            flat = obj.parts[0]
            assert 8 <= len(flat) // 2 <= 40
            assert all(v == round(v, 1) for v in flat)
            checked = outline_check(parts=obj.parts, width=scene.width, height=scene.height)
            assert checked.area == pytest.approx(obj.area, abs=0.01)
            polygon = shape(flat)
            assert polygon.contains(Point(obj.center)) and polygon.exterior.distance(Point(obj.center)) > 1
            shapes.append(polygon)
        for p, q in combinations(shapes, 2):
            assert p.distance(q) >= 2.9  # apart, so the truth outline is the visible outline


def test_scenes_mix_categories_counts_sizes_and_empty_images(scenes):
    per_scene = [len(s.categories) for s in scenes]
    assert max(per_scene) == 3 and min(per_scene) == 0
    empty = sum(1 for s in scenes if not s.objects)
    assert 4 <= empty <= 25  # empty_share 0.1 of 120
    scene = next(s for s in scenes if s.objects)
    assert scene.count(scene.objects[0].category) == sum(o.category == scene.objects[0].category for o in scene.objects)
    assert scene.count("no such category") == 0
    areas = [o.area for s in scenes for o in s.objects]
    assert sum(a < 32 * 32 for a in areas) / len(areas) > 0.15  # small ones, the kind careless workers miss
    assert max(areas) > 3000
    assert max(max(s.count(c) for c in s.categories) for s in scenes if s.objects) >= 3
    assert set().union(*(s.categories for s in scenes)) == set(CATEGORIES)


def test_shape_follows_the_category():
    # With one category per scene, each family's vertex count is its signature.
    vertices: dict[str, set[int]] = {}
    for scene in scenes_generate(n=40, categories=CATEGORIES[:6], seed=2, max_categories=1, empty_share=0):
        for obj in scene.objects:
            vertices.setdefault(obj.category, set()).add(len(obj.parts[0]) // 2)
    assert vertices == {"person": {24}, "bicycle": {20}, "car": {10}, "cat": {28}, "dog": {12}, "bird": {32}}
    # ellipse, rounded box, star, blob, cross, gear; past six the families come back with other parameters
    later = scenes_generate(n=40, categories=[f"c{i}" for i in range(9)], seed=2, max_categories=1, empty_share=0)
    assert {len(o.parts[0]) // 2 for s in later for o in s.objects if o.category == "c8"} == {12}  # a 6-point star


def test_jpeg_shows_each_object_in_its_category_colour(scenes):
    scene = next(s for s in scenes if len(s.categories) >= 2)
    image = PILImage.open(io.BytesIO(scene.jpeg(quality=95))).convert("RGB")
    assert image.size == (scene.width, scene.height)
    palette = dict(scene.palette)
    assert set(palette) == set(scene.categories)
    assert len(set(palette.values())) == len(palette)
    for obj in scene.objects:
        seen = np.array(image.getpixel((round(obj.center[0]), round(obj.center[1]))), dtype=float)
        colour = np.array(palette[obj.category], dtype=float)
        # filled with the colour shaded by 0.85 to 1: the hue is the category's
        assert np.allclose(seen / max(seen.sum(), 1), colour / colour.sum(), atol=0.06), (obj, seen, colour)
    assert scene.jpeg(quality=30) != scene.jpeg(quality=95)


def test_scenes_refuse_bad_categories():
    with pytest.raises(ValueError):
        scenes_generate(n=1, categories=[], seed=1)
    with pytest.raises(ValueError):
        scenes_generate(n=1, categories=["cat", "cat"], seed=1)


# --- Workers ---------------------------------------------------------------------------------------

def test_crowd_mix_names_workers_and_gives_each_its_own_generator():
    crowd = crowd_mix("careful:2, sloppy:1,spammer:1", seed=3)
    assert [w.id for w in crowd] == ["sim-careful-01", "sim-careful-02", "sim-sloppy-01", "sim-spammer-01"]
    assert [w.profile.name for w in crowd] == ["careful", "careful", "sloppy", "spammer"]
    draws = [w.rng.random() for w in crowd]
    assert len(set(draws)) == 4
    assert [w.rng.random() for w in crowd_mix("careful:2,sloppy:1,spammer:1", seed=3)] == draws
    assert [w.rng.random() for w in crowd_mix("careful:2,sloppy:1,spammer:1", seed=4)] != draws
    assert [w.id for w in crowd_mix("careful:1,sloppy:1,careful:1", seed=1)] == [
        "sim-careful-01", "sim-sloppy-01", "sim-careful-02"]
    with pytest.raises(ValueError, match="unknown worker profile"):
        crowd_mix("careful:1,genius:2", seed=1)
    with pytest.raises(ValueError, match="name:count"):
        crowd_mix("careful", seed=1)


def test_profiles_named_in_the_issue_exist():
    assert {"careful", "sloppy", "spammer", "biased", "jittery", "loose"} <= set(PROFILES)
    assert PROFILES["spammer"].spam and not PROFILES["careful"].spam
    assert PROFILES["careful"].p_miss < PROFILES["sloppy"].p_miss
    assert PROFILES["jittery"].click_jitter > PROFILES["careful"].click_jitter
    assert PROFILES["loose"].outline_loose > PROFILES["careful"].outline_loose


def run_crowd(w: SimWorker, scenes: list[Scene]) -> dict:
    """Every tool for every scene by one worker, scored against the truth."""
    names = {v: k for k, v in IDS.items()}
    labels = w.answer_categories([(i + 1, s) for i, s in enumerate(scenes)], IDS)
    truth_cats = {s.name: set(s.categories) for s in scenes}
    found = {scenes[e["image"] - 1].name: {names[c] for c in e["present"]} for e in labels["images"]}
    t_counts, p_counts, t_outlines, p_outlines = {}, {}, {}, {}
    right = decided = 0
    for i, scene in enumerate(scenes):
        for category in scene.categories:
            key = (scene.name, category)
            spot = w.answer_spotting(i + 1, scene, category, IDS[category])
            t_counts[key], p_counts[key] = scene.count(category), len(spot["points"])
            t_outlines[key] = [o.parts for o in scene.of_category(category)]
            p_outlines[key] = [w.answer_segmentation(1, o.center, scene, category)["parts"]
                               for o in scene.of_category(category)]
            items = [(j + 1, parts, category, scene) for j, parts in enumerate(t_outlines[key] + p_outlines[key])]
            votes = w.answer_verification(items)["decisions"]
            for (_, parts, _, _), vote in zip(items, votes):
                should = max(outline_iou(parts, t) for t in t_outlines[key]) >= 0.75
                right += vote["accept"] == should
                decided += 1
    return {"categories": category_scores(truth_cats, found), "counts": instance_counts(t_counts, p_counts),
            "outlines": outline_scores(t_outlines, p_outlines), "verification": right / decided}


def test_careful_workers_score_near_perfect_and_spammers_poorly(scenes):
    careful = run_crowd(worker("careful"), scenes)
    assert careful["categories"]["recall"] >= 0.97 and careful["categories"]["precision"] >= 0.95
    assert careful["counts"]["exact"] >= 0.85 and careful["counts"]["mae"] <= 0.2
    assert careful["outlines"]["mean_iou"] >= 0.9 and careful["outlines"]["share_iou_75"] >= 0.97
    assert careful["verification"] >= 0.93

    spammer = run_crowd(worker("spammer"), scenes)
    assert spammer["categories"]["recall"] <= 0.35 and spammer["categories"]["precision"] <= 0.4
    assert spammer["counts"]["exact"] <= 0.4
    assert spammer["outlines"]["mean_iou"] <= 0.15 and spammer["outlines"]["share_iou_75"] <= 0.02
    assert 0.35 <= spammer["verification"] <= 0.65


def test_sloppy_workers_miss_about_a_quarter_and_small_objects_most(scenes):
    sloppy = run_crowd(worker("sloppy"), scenes)
    assert 0.65 <= sloppy["categories"]["recall"] <= 0.85
    assert sloppy["categories"]["fp"] > 0
    # miss rates by size, over many draws of the same scenes
    w = worker("sloppy", seed=9)
    small = big = small_missed = big_missed = 0
    for _ in range(10):
        answer = w.answer_categories([(i + 1, s) for i, s in enumerate(scenes)], IDS)
        for entry, scene in zip(answer["images"], scenes):
            for category in scene.categories:
                largest = max(o.area for o in scene.of_category(category))
                missed = IDS[category] not in entry["present"]
                if largest < 400:
                    small, small_missed = small + 1, small_missed + missed
                elif largest > 1024:
                    big, big_missed = big + 1, big_missed + missed
    assert big_missed / big == pytest.approx(0.18, abs=0.05)
    assert small_missed / small > 0.3


def test_biased_worker_marks_its_favourite_everywhere_and_misses_small_objects(scenes):
    w = worker("biased")
    answer = w.answer_categories([(i + 1, s) for i, s in enumerate(scenes)], IDS)
    assert w.favourite in CATEGORIES
    assert all(IDS[w.favourite] in e["present"] for e in answer["images"])
    large = [(i, c) for i, s in enumerate(scenes) for c in s.categories - {w.favourite}
             if max(o.area for o in s.of_category(c)) > 1024]
    assert sum(IDS[c] not in answer["images"][i]["present"] for i, c in large) / len(large) < 0.15
    # spotting, per instance: most objects under 150 px² go unclicked, large ones seldom
    w = worker("biased", p_click_extra=0.0, click_jitter=0.0)
    clicked: dict[str, list[bool]] = {"tiny": [], "large": []}
    for i, scene in enumerate(scenes):
        for category in scene.categories:
            points = {(p["x"], p["y"]) for p in w.answer_spotting(i + 1, scene, category, IDS[category])["points"]}
            for obj in scene.of_category(category):
                size = "tiny" if obj.area < 150 else "large" if obj.area > 1024 else None
                if size:
                    clicked[size].append(obj.center in points)
    assert len(clicked["tiny"]) >= 20
    assert 1 - np.mean(clicked["tiny"]) > 0.4
    assert 1 - np.mean(clicked["large"]) < 0.15


def test_jittery_clicks_spread_and_loose_outlines_grow(scenes):
    perfect = dict(p_click_miss=0.0, p_click_extra=0.0)
    steady, jittery = worker("careful", **perfect), worker("jittery", **perfect)
    spread = {"careful": [], "jittery": []}
    loose, tight = worker("loose", outline_noise=0.0), worker("careful", outline_noise=0.0)
    for i, scene in enumerate(scenes[:60]):
        for category in scene.categories:
            for name, w in (("careful", steady), ("jittery", jittery)):
                points = w.answer_spotting(i + 1, scene, category, IDS[category])["points"]
                assert len(points) == scene.count(category)
                spread[name] += [math.dist((p["x"], p["y"]), o.center)
                                 for p, o in zip(points, scene.of_category(category))]
            for obj in scene.of_category(category):
                exact = tight.answer_segmentation(1, obj.center, scene, category)["parts"]
                assert outline_iou(exact, obj.parts) > 0.999
                grown = loose.answer_segmentation(1, obj.center, scene, category)["parts"]
                assert shape(grown[0]).buffer(0.2).contains(shape(obj.parts[0]))
                assert shape(grown[0]).area > obj.area
    assert np.median(spread["careful"]) < 3 < np.median(spread["jittery"])


def test_segmentation_picks_the_object_under_the_point(scenes):
    scene = next(s for s in scenes if len(s.objects) >= 3)
    w = worker("careful", outline_noise=0.0)
    for obj in scene.objects:
        parts = w.answer_segmentation(7, obj.center, scene, obj.category)["parts"]
        best = max(scene.objects, key=lambda o: outline_iou(parts, o.parts))
        assert best is obj
    # a point off every object of the category: the nearest one is outlined
    obj = scene.objects[0]
    x, y = obj.center
    off = (min(max(x + 0.5 * math.sqrt(obj.area), 0), scene.width), y)
    same = [o for o in scene.objects if o.category == obj.category]
    nearest = min(same, key=lambda o: shape(o.parts[0]).distance(Point(off)))
    parts = w.answer_segmentation(7, off, scene, obj.category)["parts"]
    assert outline_iou(parts, nearest.parts) > 0.99


def test_segmentation_with_nothing_to_outline_still_passes_the_check():
    empty = Scene(name="empty", width=50, height=40, objects=())
    for name in PROFILES:
        for point in [(0.0, 0.0), (50.0, 40.0), (25.0, 20.0)]:
            answer = worker(name).answer_segmentation(3, point, empty, "cat")
            assert answer["point"] == 3
            outline_check(parts=answer["parts"], width=50, height=40)


def test_outlines_of_objects_on_the_image_edge_stay_inside_the_image():
    # an object touching the corner: loose and noisy outlines are cut at the image border
    edge = TruthObject(category="cat", parts=[[0.0, 0.0, 20.0, 0.0, 20.0, 15.0, 10.0, 18.0, 0.0, 15.0, 0.0, 8.0,
                                               0.0, 5.0, 0.0, 2.0]], center=(8.0, 8.0), area=330.0)
    scene = Scene(name="edge", width=40, height=30, objects=(edge,))
    for name in PROFILES:
        w = worker(name, seed=2)
        for _ in range(30):
            parts = w.answer_segmentation(1, (8.0, 8.0), scene, "cat")["parts"]
            outline_check(parts=parts, width=40, height=30)
            training = w.answer_training([(5, edge.parts, scene), (6, edge.parts)], attempt=2)
            for item in training["items"]:
                outline_check(parts=item["parts"], width=40, height=30)


def test_verification_follows_the_iou_threshold():
    obj = TruthObject(category="cat", parts=[square(10.0, 10.0, 40.0)], center=(30.0, 30.0), area=1600.0)
    scene = Scene(name="one", width=100, height=80, objects=(obj,))
    honest = worker("careful", p_verify_error=0.0)
    polygons = [
        (1, obj.parts, "cat", scene),  # IoU 1
        (2, [square(14.0, 10.0, 40.0)], "cat", scene),  # IoU 36/44 = 0.818
        (3, [square(18.0, 10.0, 40.0)], "cat", scene),  # IoU 32/48 = 0.667
        (4, obj.parts, "dog", scene),  # no dog in the image
    ]
    answer = honest.answer_verification(polygons)
    assert answer == {"schema": "annotator.answer/verification", "version": 1, "decisions": [
        {"polygon": 1, "accept": True}, {"polygon": 2, "accept": True},
        {"polygon": 3, "accept": False}, {"polygon": 4, "accept": False}]}
    contrary = worker("careful", p_verify_error=1.0).answer_verification(polygons)
    assert [d["accept"] for d in contrary["decisions"]] == [False, False, True, True]


def test_answers_repeat_for_a_seed(scenes):
    def answers(seed):
        out = []
        for w in crowd_mix("careful:1,sloppy:1,spammer:1,biased:1,jittery:1,loose:1", seed=seed):
            out.append(w.answer_categories([(i + 1, s) for i, s in enumerate(scenes[:10])], IDS))
            for i, scene in enumerate(scenes[:10]):
                for obj in scene.objects:
                    out.append(w.answer_spotting(i + 1, scene, obj.category, IDS[obj.category]))
                    out.append(w.answer_segmentation(i + 1, obj.center, scene, obj.category))
        return out

    assert answers(21) == answers(21)
    assert answers(21) != answers(22)


# --- Metrics on cases worked out by hand -----------------------------------------------------------

def test_category_scores_by_hand():
    truth = {"a": {"cat", "dog"}, "b": {"car"}, "c": set()}
    predicted = {"a": {"cat"}, "b": {"car", "dog"}, "d": {"cup"}}
    # tp: a/cat, b/car; fp: b/dog, d/cup; fn: a/dog
    assert category_scores(truth, predicted) == pytest.approx(
        {"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "tp": 2, "fp": 2, "fn": 1})
    assert category_scores({}, {}) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 0, "fp": 0, "fn": 0}
    assert category_scores({"a": {"cat"}}, {})["recall"] == 0.0


def test_instance_counts_by_hand():
    truth = {("a", "cat"): 2, ("a", "dog"): 1, ("b", "car"): 3}
    predicted = {("a", "cat"): 2, ("b", "car"): 1, ("b", "dog"): 1}
    # errors: 0, 1 (dog missed), 2, 1 (a dog that is not there)
    assert instance_counts(truth, predicted) == {"exact": 0.25, "mae": 1.0, "pairs": 4}
    assert instance_counts({}, {}) == {"exact": 1.0, "mae": 0.0, "pairs": 0}


def test_outline_scores_by_hand():
    a, b, c = square(0, 0, 10), square(20, 0, 10), square(0, 0, 4)
    truth = {("img", "cat"): [[a], [b]], ("img", "dog"): [[c]]}
    predicted = {
        ("img", "cat"): [[square(5, 0, 10)], [b]],  # a shifted by half: 50 / 150; b exact
        ("img", "car"): [[c]],  # nothing of that category in the truth
    }
    scores = outline_scores(truth, predicted)
    # per truth object: 1/3, 1, 0 (the dog has no outline)
    assert scores == pytest.approx({"mean_iou": 4 / 9, "matched_mean_iou": 2 / 3, "share_iou_50": 1 / 3,
                                    "share_iou_75": 1 / 3, "n_truth": 3, "n_predicted": 3})


def test_outline_scores_match_greedily_and_once():
    t1, t2 = square(0, 0, 10), square(8, 0, 10)
    one = [square(1, 0, 10)]  # IoU 90/110 with t1, 30/170 with t2
    scores = outline_scores({("i", "c"): [[t1], [t2]]}, {("i", "c"): [one]})
    assert scores["mean_iou"] == pytest.approx((9 / 11) / 2)
    assert scores["matched_mean_iou"] == pytest.approx(9 / 11)
    # a second outline takes the other object: t2 gets its 30/170 only when nothing better is left
    scores = outline_scores({("i", "c"): [[t1], [t2]]}, {("i", "c"): [one, [square(8, 0, 10)]]})
    assert scores["mean_iou"] == pytest.approx((9 / 11 + 1) / 2)
    assert scores["share_iou_75"] == 1.0


def test_outline_iou_of_parts_is_the_iou_of_their_union():
    a, b = square(0, 0, 10), square(20, 0, 10)
    assert outline_iou([a, b], [a]) == pytest.approx(0.5)
    assert outline_iou([a], [square(20, 20, 5)]) == 0.0


# --- Every answer passes the server's own validator ------------------------------------------------

@pytest.mark.django_db
def test_every_answer_of_every_profile_passes_answer_clean(scenes):
    from datasets.models import InstancePoint, Polygon, Stage
    from frontend.answers import answer_clean
    from frontend.services import task_item_create
    from tests.factories import CategoryFactory, ImageFactory, ProjectFactory

    project = ProjectFactory()
    categories = {name: CategoryFactory(project=project, name=name, coco_id=i + 1)
                  for i, name in enumerate(CATEGORIES)}
    ids = {name: c.pk for name, c in categories.items()}
    chosen = [s for s in scenes if s.objects][:4] + [next(s for s in scenes if not s.objects)]
    images = [ImageFactory(project=project, width=s.width, height=s.height) for s in chosen]
    golds = [Polygon.objects.create(image=images[0], category=categories[o.category], parts=o.parts, area=o.area,
                                    bbox=outline_check(parts=o.parts, width=320, height=240).bbox,
                                    stage=Stage.REQUESTER, made_by="requester") for o in chosen[0].objects]
    label_task = task_item_create(kind="categories", project=project, images=images)
    training_task = task_item_create(kind="training", project=project, polygons=golds)

    for w in crowd_mix("careful:1,sloppy:1,spammer:1,biased:1,jittery:1,loose:1", seed=8):
        answer = w.answer_categories([(im.pk, s) for im, s in zip(images, chosen)], ids)
        assert answer_clean(task=label_task, answer=answer).data == {"images": answer["images"]}
        for attempt in (1, 2):
            answer = w.answer_training([(g.pk, g.parts) for g in golds], attempt)
            assert answer_clean(task=training_task, answer=answer).data["attempt"] == attempt
        outlines = []
        for image, scene in zip(images, chosen):
            for category in scene.categories | {"cup"}:
                task = task_item_create(kind="spotting", project=project, images=[image],
                                        category=categories[category])
                answer = w.answer_spotting(image.pk, scene, category, ids[category])
                assert answer["crowd"] is False
                clean = answer_clean(task=task, answer=answer)
                assert clean.data["points"] == answer["points"]
                for p in answer["points"]:
                    point = InstancePoint.objects.create(image=image, category=categories[category], x=p["x"],
                                                         y=p["y"], stage=Stage.SPOTTING, made_by=w.id)
                    task = task_item_create(kind="segmentation", project=project, point=point)
                    answer = w.answer_segmentation(point.pk, (p["x"], p["y"]), scene, category)
                    clean = answer_clean(task=task, answer=answer)
                    assert clean.data["parts"] == answer["parts"]
                    polygon = Polygon.objects.create(image=image, category=categories[category], point=point,
                                                     parts=clean.data["parts"], area=clean.outlines[point.pk].area,
                                                     bbox=clean.outlines[point.pk].bbox,
                                                     stage=Stage.SEGMENTATION, made_by=w.id)
                    outlines.append((polygon.pk, polygon.parts, category, scene))
        assert outlines or w.profile.spam
        if outlines:
            task = task_item_create(kind="verification", project=project, polygons=[o[0] for o in outlines])
            answer = w.answer_verification(outlines)
            assert answer_clean(task=task, answer=answer).data == {"decisions": answer["decisions"]}
