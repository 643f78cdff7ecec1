"""The pipeline's per-item rules, alone (no database): when an item is finished, and with what."""
from __future__ import annotations

from crowd.pipeline.decide import (
    DEFAULT_PRESENCE,
    Rule,
    Skill,
    categories_decide,
    category_skills,
    segmentation_decide,
    spotting_decide,
    verification_decide,
)

CATS = [1, 2, 3]


def test_any_worker_keeps_a_category_one_worker_saw_once_all_answers_are_in():
    rule = Rule(redundancy=3, aggregation="any")
    votes = [("a", {1}), ("b", {1, 2})]
    assert not categories_decide(votes, CATS, rule).finished  # 2 of 3 answers
    d = categories_decide(votes + [("c", set())], CATS, rule)
    assert d.finished and d.result == [1, 2]


def test_majority_asks_one_more_worker_on_a_tie_and_counts_a_tie_at_the_cap_as_present():
    votes = [("a", {1, 2}), ("b", {1})]
    below_cap = categories_decide(votes, CATS, Rule(redundancy=3, adaptive=True, min_answers=2,
                                                    aggregation="majority", confidence=0.5))
    assert not below_cap.finished and "tie" in below_cap.reason
    at_cap = categories_decide(votes, CATS, Rule(redundancy=2, aggregation="majority"))
    assert at_cap.finished and at_cap.result == [1, 2]


def test_dawid_skene_posterior_weighs_a_careful_worker_above_a_spammer():
    skills = {"careful": Skill(0.95, 0.99), "spammer": Skill(0.5, 0.5)}
    d = categories_decide([("careful", {1}), ("spammer", {2, 3})], CATS,
                          Rule(redundancy=2, aggregation="ds"), skills, presence=0.2)
    assert d.finished and d.result == [1]
    assert d.extra["posterior"]["1"] > 0.9 and d.extra["posterior"]["2"] < 0.3


def test_adaptive_stops_when_sure_and_asks_again_when_workers_disagree():
    rule = Rule(redundancy=8, adaptive=True, min_answers=2, confidence=0.95, aggregation="ds")
    skills = {w: Skill(0.9, 0.99) for w in "abcd"}
    agree = categories_decide([("a", {1}), ("b", {1})], CATS, rule, skills, presence=0.1)
    assert agree.finished and agree.result == [1] and agree.confidence >= 0.95
    split = categories_decide([("a", {1}), ("b", set())], CATS, rule, skills, presence=0.1)
    assert not split.finished and "category 1" in split.reason
    # At the cap it decides whatever the doubt.
    capped = categories_decide([("a", {1}), ("b", set())], CATS, Rule(redundancy=2, adaptive=True, min_answers=2,
                                                                     aggregation="ds"), skills, presence=0.1)
    assert capped.finished


def test_category_skills_find_the_worker_who_marks_everything():
    rows = []
    truth = {i: {1} if i % 2 else {2} for i in range(40)}
    for i, present in truth.items():
        rows += [("good1", i, present), ("good2", i, present), ("marks-all", i, set(CATS))]
    skills, presence = category_skills(rows, CATS)
    assert skills["good1"].specificity > 0.9 and skills["good1"].sensitivity > 0.9
    assert skills["marks-all"].specificity < 0.3
    assert 0.2 < presence < 0.5


def test_spotting_clusters_clicks_into_instances_and_waits_while_counts_differ():
    rule = Rule(redundancy=8, adaptive=True, min_answers=2, cluster_min_workers=2)
    two = [("a", [(10, 10), (50, 40)], False), ("b", [(11, 9), (49, 41)], False)]
    d = spotting_decide(two, width=64, height=48, rule=rule)
    assert d.finished and len(d.result["instances"]) == 2
    assert d.result["instances"][0][:2] == [10.5, 9.5]
    differ = [("a", [(10, 10), (50, 40)], False), ("b", [(11, 9)], False)]
    assert not spotting_decide(differ, width=64, height=48, rule=rule).finished


def test_segmentation_takes_the_first_outline():
    d = segmentation_decide([("a", None), ("b", 17), ("c", 18)], Rule(redundancy=1))
    assert d.finished and d.result == {"polygon": 17, "worker": "b"}
    assert not segmentation_decide([], Rule(redundancy=1)).finished


def test_verification_weighs_votes_by_reliability_and_rejects_a_split_at_the_cap():
    votes = [("expert", True), ("poor1", False), ("poor2", False)]
    d = verification_decide(votes, Rule(redundancy=3), {"expert": 0.97, "poor1": 0.55, "poor2": 0.55})
    assert d.finished and d.result["accept"] is True
    even = verification_decide([("a", True), ("b", False)], Rule(redundancy=2))
    assert even.finished and even.result["accept"] is False
    rule = Rule(redundancy=5, adaptive=True, min_answers=3, confidence=0.95)
    assert not verification_decide([("a", True), ("b", True), ("c", False)], rule).finished
    assert verification_decide([("a", True), ("b", True), ("c", True)], rule).finished


def test_adaptive_spotting_dismisses_a_stray_click_once_enough_workers_left_it():
    from crowd.pipeline.decide import cluster_posterior

    assert cluster_posterior(2, 2) > 0.99 and cluster_posterior(1, 5) < 0.05
    rule = Rule(redundancy=8, adaptive=True, min_answers=2, confidence=0.95)
    clicks = [("a", [(10, 10), (60, 5)], False)] + [(w, [(10, 10)], False) for w in "bcde"]
    assert not spotting_decide(clicks[:3], width=64, height=48, rule=rule).finished
    d = spotting_decide(clicks, width=64, height=48, rule=rule)
    assert d.finished and [i[:2] for i in d.result["instances"]] == [[10.0, 10.0]]


def test_category_skills_wait_for_a_third_worker():
    # Two workers who disagree on everything: nothing says which one is right.
    rows = [(w, i, {1} if (w == "a") == (i % 2 == 0) else {2}) for i in range(10) for w in ("a", "b")]
    assert category_skills(rows, CATS) == ({}, DEFAULT_PRESENCE)
    skills, _ = category_skills(rows + [("c", i, {1} if i % 2 == 0 else {2}) for i in range(10)], CATS)
    assert skills["a"].sensitivity > skills["b"].sensitivity  # c sides with a
