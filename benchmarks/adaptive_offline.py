"""Adaptive redundancy for category labeling, offline: the pipeline's own rule (crowd/pipeline/
decide.py) against COCO's 8 workers with "any worker", on the simulation's scenes and workers,
one answer at a time (no server, no Celery: the pipeline always reacts before the next answer).

    DEBUG=true .venv/bin/python benchmarks/adaptive_offline.py

Prints precision, recall and answers used per setting and seed, and one JSON object last.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotator.settings")
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402

from crowd.pipeline.decide import Rule, categories_decide, category_skills  # noqa: E402
from crowd.simulation.run import DEFAULT_CROWD  # noqa: E402
from crowd.simulation.scenes import scenes_generate  # noqa: E402
from crowd.simulation.workers import crowd_mix  # noqa: E402

NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus"]
IDS = {n: i + 1 for i, n in enumerate(NAMES)}
PER_HIT, IMAGES, CAP = 5, 60, 8


def scores(images, results):
    tp = fp = fn = 0
    for i, scene in images:
        truth = {IDS[c] for c in scene.categories}
        tp += len(truth & results[i])
        fp += len(results[i] - truth)
        fn += len(truth - results[i])
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def fixed(seed):
    images = list(enumerate(scenes_generate(n=IMAGES, categories=NAMES, seed=seed), start=1))
    crowd = crowd_mix(DEFAULT_CROWD, seed=seed)
    rng = np.random.default_rng(seed)
    results, used = {}, 0
    for h in range(0, len(images), PER_HIT):
        chunk = images[h:h + PER_HIT]
        marks = {i: set() for i, _ in chunk}
        for k in rng.permutation(len(crowd))[:CAP]:
            used += 1
            for e in crowd[k].answer_categories(chunk, IDS)["images"]:
                marks[e["image"]] |= set(e["present"])
        results.update(marks)
    return (*scores(images, results), used)


def adaptive(seed, min_answers, confidence):
    images = list(enumerate(scenes_generate(n=IMAGES, categories=NAMES, seed=seed), start=1))
    crowd = crowd_mix(DEFAULT_CROWD, seed=seed)
    rng = np.random.default_rng(seed)
    rule = Rule(redundancy=CAP, adaptive=True, min_answers=min_answers, confidence=confidence, aggregation="ds")
    cats = list(IDS.values())
    rows, results, used = [], {}, 0
    for h in range(0, len(images), PER_HIT):
        chunk = images[h:h + PER_HIT]
        votes = {i: [] for i, _ in chunk}
        open_ = set(votes)
        for k in rng.permutation(len(crowd)):
            if not open_:
                break
            used += 1
            for e in crowd[k].answer_categories(chunk, IDS)["images"]:
                rows.append((crowd[k].id, e["image"], set(e["present"])))
                votes[e["image"]].append((crowd[k].id, set(e["present"])))
            skills, presence = category_skills(rows, cats)
            for i in list(open_):
                d = categories_decide(votes[i], cats, rule, skills, presence)
                if d.finished:
                    results[i] = set(d.result)
                    open_.discard(i)
    return (*scores(images, results), used)


def main() -> None:
    out = []
    print(f"{'setting':24}{'seed':>5}{'precision':>11}{'recall':>8}{'answers':>9}{'ratio':>7}")
    for seed in (1, 2, 3):
        p, r, base = fixed(seed)
        print(f"{'COCO: 8, any worker':24}{seed:>5}{p:>11.3f}{r:>8.3f}{base:>9}{1:>7.2f}")
        out.append({"setting": "fixed", "seed": seed, "precision": p, "recall": r, "answers": base})
        for m, c in ((2, 0.95), (3, 0.99), (2, 0.9999)):
            p, r, used = adaptive(seed, m, c)
            print(f"{f'adaptive {m}, {c}':24}{seed:>5}{p:>11.3f}{r:>8.3f}{used:>9}{used / base:>7.2f}")
            out.append({"setting": f"adaptive {m} {c}", "seed": seed, "precision": p, "recall": r,
                        "answers": used, "ratio": round(used / base, 3)})
    print(json.dumps({"runs": out}))


if __name__ == "__main__":
    main()
