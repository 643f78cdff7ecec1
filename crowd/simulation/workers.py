"""Simulated workers: each answers every tool the way a kind of real crowd worker would.

A ``SimWorker`` looks at a ``Scene`` (the exact truth) and returns the very JSON the browser tool
posts (``frontend/answers.py``), with the mistakes its ``Profile`` makes. Coordinates are image
pixels rounded to 0.1 px, clicks stay inside the image, and every outline passes the server's
``outline_check`` (one simple polygon inside the image, 3 or more vertices, some area).

Profiles (numbers per answer; "small" scaling below):

    profile   p_miss p_false jitter click_miss click_extra noise loose verify_err  notes
    careful    0.01   0.005   1.5     0.02       0.01      0.5   0.0     0.03
    sloppy     0.18   0.04    4.0     0.15       0.10      2.0   1.5     0.15
    spammer    0.85   0.15     -       -          -         -     -      0.50      answers ignore the image
    biased     0.05   0.02    2.5     0.08       0.03      1.0   0.5     0.08      favourite category; misses small
    jittery    0.03   0.01    7.0     0.05       0.25      1.0   0.0     0.05      clicks
    loose      0.03   0.01    2.0     0.04       0.02      1.5   3.0     0.05      outlines

Small objects are missed more: a miss chance (categories: for the largest instance of the
category; spotting: per instance) is multiplied by ``(1024 / area) ** size_power`` when the
object is smaller than COCO's "small" threshold of 32 x 32 px, capped at 0.95. With
``size_power`` 0.5 a careful worker misses 4 to 6 % of the smallest objects (30 to 60 px²) and
1 % of large ones, a sloppy one about 30-55 % of small categories and 18 % of large ones (about a
quarter of all present categories on the default scenes). The biased worker's ``size_power`` of
1.0 makes it miss about half of the objects of 100 px² and nearly all under 60 px², and it marks
one favourite category (drawn once per worker, at its first labeling task) on every image,
clicking some other object when asked to spot that category where it is absent.

The numbers are chosen to be plausible, not fitted to data: a careful worker finds nearly
everything, a sloppy one misses about a quarter of what is there (single workers missing much is
why COCO asked eight of them per image and kept a category any one of them marked), and a spammer
is at chance. A spammer marks each category with probability 0.15 whatever the image shows (so
``1 - p_miss == p_false``), clicks 0 to 3 random points, draws a random triangle or box, and
accepts or rejects at random. Everyone else's right verification decision is to accept an outline
whose IoU with the best truth object of its category is at least 0.75 (``VERIFY_IOU``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from shapely import box
from shapely.geometry import Point
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.geometry.base import BaseGeometry

from crowd.simulation.metrics import outline_iou, outline_shape
from crowd.simulation.scenes import Scene, TruthObject

SCHEMA_PREFIX = "annotator.answer/"
VERSION = 1
SMALL_AREA = 32 * 32  # COCO's small objects
VERIFY_IOU = 0.75  # the outline a careful verifier accepts


@dataclass(frozen=True)
class Profile:
    name: str
    p_miss: float  # per category present: chance to leave it unmarked (scaled up for small objects)
    p_false: float  # per category absent: chance to mark it
    click_jitter: float  # sd in px of clicks around an object's centre
    p_click_miss: float  # per instance: chance not to click it (scaled up for small objects)
    p_click_extra: float  # per image and category: chance of one stray click
    outline_noise: float  # sd in px of vertex noise
    outline_loose: float  # px the outline is dilated by, 0 = tight
    p_verify_error: float  # chance to flip the right verification decision
    spam: bool = False  # answers at random, whatever the image shows
    favourite: bool = False  # marks one favourite category on every image
    size_power: float = 0.5  # how strongly small objects raise the miss chances


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("careful", p_miss=0.01, p_false=0.005, click_jitter=1.5, p_click_miss=0.02, p_click_extra=0.01,
            outline_noise=0.5, outline_loose=0.0, p_verify_error=0.03),
    Profile("sloppy", p_miss=0.18, p_false=0.04, click_jitter=4.0, p_click_miss=0.15, p_click_extra=0.10,
            outline_noise=2.0, outline_loose=1.5, p_verify_error=0.15),
    Profile("spammer", p_miss=0.85, p_false=0.15, click_jitter=0.0, p_click_miss=0.0, p_click_extra=0.0,
            outline_noise=0.0, outline_loose=0.0, p_verify_error=0.5, spam=True),
    Profile("biased", p_miss=0.05, p_false=0.02, click_jitter=2.5, p_click_miss=0.08, p_click_extra=0.03,
            outline_noise=1.0, outline_loose=0.5, p_verify_error=0.08, favourite=True, size_power=1.0),
    Profile("jittery", p_miss=0.03, p_false=0.01, click_jitter=7.0, p_click_miss=0.05, p_click_extra=0.25,
            outline_noise=1.0, outline_loose=0.0, p_verify_error=0.05),
    Profile("loose", p_miss=0.03, p_false=0.01, click_jitter=2.0, p_click_miss=0.04, p_click_extra=0.02,
            outline_noise=1.5, outline_loose=3.0, p_verify_error=0.05),
)}


def _header(kind: str) -> dict[str, Any]:
    return {"schema": f"{SCHEMA_PREFIX}{kind}", "version": VERSION}


def _r(value: float) -> float:
    return round(float(value), 1)


def flat_valid(flat: Sequence[float], width: float, height: float) -> bool:
    """Whether one part would pass ``outline_check``: 3+ vertices inside the image, simple, some area."""
    if len(flat) % 2 or len(flat) < 6:
        return False
    if not all(isinstance(v, float) and math.isfinite(v) for v in flat):
        return False
    xs, ys = flat[0::2], flat[1::2]
    if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
        return False
    shape = ShapelyPolygon(list(zip(xs, ys)))
    return shape.is_valid and shape.area > 0


def _largest_polygon(shape: BaseGeometry) -> ShapelyPolygon | None:
    if shape.is_empty:
        return None
    if isinstance(shape, ShapelyPolygon):
        return shape
    polygons = [g for g in getattr(shape, "geoms", []) if isinstance(g, ShapelyPolygon)]
    return max(polygons, key=lambda g: g.area) if polygons else None


@dataclass
class SimWorker:
    id: str
    profile: Profile
    rng: np.random.Generator
    favourite: str | None = field(default=None)  # the biased worker's category, drawn at first sight

    # --- chances -------------------------------------------------------------------------------

    def _scaled(self, p: float, area: float) -> float:
        if area < SMALL_AREA:
            p *= (SMALL_AREA / max(area, 1.0)) ** self.profile.size_power
        return min(p, 0.95)

    def _chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def _favourite(self, categories: Sequence[str]) -> str | None:
        if self.profile.favourite and self.favourite is None and categories:
            names = sorted(categories)
            self.favourite = names[int(self.rng.integers(len(names)))]
        return self.favourite

    # --- category labeling ---------------------------------------------------------------------

    def answer_categories(self, images: list[tuple[int, Scene]], category_ids: dict[str, int]) -> dict:
        favourite = self._favourite(list(category_ids))
        entries = []
        for image_id, scene in images:
            present = []
            for name, cid in category_ids.items():
                if self.profile.spam:
                    marked = self._chance(self.profile.p_false)
                elif name == favourite:
                    marked = True
                elif scene.count(name):
                    largest = max(o.area for o in scene.of_category(name))
                    marked = not self._chance(self._scaled(self.profile.p_miss, largest))
                else:
                    marked = self._chance(self.profile.p_false)
                if marked:
                    present.append(cid)
            entries.append({"image": image_id, "present": sorted(present)})
        return {**_header("categories"), "images": entries}

    # --- instance spotting ---------------------------------------------------------------------

    def _click(self, x: float, y: float, scene: Scene, jitter: float) -> dict[str, float]:
        if jitter > 0:
            x, y = x + self.rng.normal(0, jitter), y + self.rng.normal(0, jitter)
        return {"x": _r(min(max(x, 0.0), scene.width)), "y": _r(min(max(y, 0.0), scene.height))}

    def _stray(self, scene: Scene) -> dict[str, float]:
        return self._click(self.rng.uniform(0, scene.width), self.rng.uniform(0, scene.height), scene, 0.0)

    def answer_spotting(self, image_id: int, scene: Scene, category: str, category_id: int) -> dict:
        p = self.profile
        points = []
        if p.spam:
            points = [self._stray(scene) for _ in range(int(self.rng.integers(0, 4)))]
        else:
            objects = scene.of_category(category)
            if not objects and category == self.favourite:
                others = list(scene.objects)  # it "sees" its favourite in some other object
                if others:
                    o = others[int(self.rng.integers(len(others)))]
                    points.append(self._click(*o.center, scene, p.click_jitter))
            for o in objects:
                if not self._chance(self._scaled(p.p_click_miss, o.area)):
                    points.append(self._click(*o.center, scene, p.click_jitter))
            if self._chance(p.p_click_extra):
                points.append(self._stray(scene))
        return {**_header("spotting"), "image": image_id, "category": category_id, "points": points,
                "crowd": False}

    # --- outlines ------------------------------------------------------------------------------

    def _random_outline(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        """A spammer's outline: a random triangle or box within [x0, x1] x [y0, y1]."""
        for _ in range(20):
            if self._chance(0.5):
                xs = sorted(self.rng.uniform(x0, x1, 2))
                ys = sorted(self.rng.uniform(y0, y1, 2))
                flat = [_r(xs[0]), _r(ys[0]), _r(xs[1]), _r(ys[0]), _r(xs[1]), _r(ys[1]), _r(xs[0]), _r(ys[1])]
            else:
                flat = [_r(v) for _ in range(3) for v in (self.rng.uniform(x0, x1), self.rng.uniform(y0, y1))]
            if flat_valid(flat, x1, y1) and ShapelyPolygon(list(zip(flat[0::2], flat[1::2]))).area >= 1:
                return flat
        return [_r(x0), _r(y0), _r(x1), _r(y0), _r(x0), _r(y1)]

    def _drawn(self, shape: BaseGeometry, width: float, height: float, fallback: list[float]) -> list[float]:
        """The worker's outline of ``shape``: dilated by the looseness, each vertex moved by the noise,
        kept inside the image; ``fallback`` (a valid part) if no noisy version comes out valid."""
        p = self.profile
        if p.outline_loose > 0:
            shape = shape.buffer(p.outline_loose, join_style="mitre", mitre_limit=2.0).simplify(0.2)
        polygon = _largest_polygon(shape.intersection(box(0, 0, width, height)))
        if polygon is None or polygon.area <= 0:
            return fallback
        coords = np.asarray(polygon.exterior.coords)[:-1]
        start = int(self.rng.integers(len(coords)))  # people start anywhere on the outline
        coords = np.roll(coords, -start, axis=0)
        for attempt in range(6):
            sd = p.outline_noise * 0.5 ** attempt if attempt < 5 else 0.0
            moved = coords + (self.rng.normal(0, sd, coords.shape) if sd > 0 else 0.0)
            moved[:, 0] = np.clip(moved[:, 0], 0, width)
            moved[:, 1] = np.clip(moved[:, 1], 0, height)
            flat = [_r(v) for v in moved.reshape(-1)]
            if flat_valid(flat, width, height):
                return flat
        return fallback

    def _target(self, point: tuple[float, float], scene: Scene, category: str) -> TruthObject | None:
        candidates = scene.of_category(category) or list(scene.objects)
        if not candidates:
            return None
        here = Point(point)
        return min(candidates, key=lambda o: outline_shape(o.parts).distance(here))

    def answer_segmentation(self, point_id: int, point: tuple[float, float], scene: Scene, category: str) -> dict:
        """Outline the object of ``category`` under (or nearest to) the point; with no such object,
        the nearest object of any category; on an empty image, a small box around the point."""
        w, h = scene.width, scene.height
        if self.profile.spam:
            return {**_header("segmentation"), "point": point_id, "parts": [self._random_outline(0, 0, w, h)]}
        target = self._target(point, scene, category)
        if target is None:
            x, y = min(max(point[0], 0.0), w), min(max(point[1], 0.0), h)
            shape = box(max(x - 6, 0), max(y - 6, 0), min(x + 6, w), min(y + 6, h))
            fallback = [_r(v) for xy in list(shape.exterior.coords)[:-1] for v in xy]
        else:
            shape, fallback = outline_shape(target.parts), target.parts[0]
        parts = [self._drawn(shape, w, h, fallback)]
        return {**_header("segmentation"), "point": point_id, "parts": parts}

    # --- verification --------------------------------------------------------------------------

    def answer_verification(self, polygons: list[tuple[int, list[list[float]], str, Scene]]) -> dict:
        decisions = []
        for polygon_id, parts, category, scene in polygons:
            if self.profile.spam:
                accept = self._chance(0.5)
            else:
                best = max((outline_iou(parts, o.parts) for o in scene.of_category(category)), default=0.0)
                accept = best >= VERIFY_IOU
                if self._chance(self.profile.p_verify_error):
                    accept = not accept
            decisions.append({"polygon": polygon_id, "accept": accept})
        return {**_header("verification"), "decisions": decisions}

    # --- training ------------------------------------------------------------------------------

    def answer_training(self, items: list[tuple], attempt: int) -> dict:
        """Outline each gold shape. An item is ``(gold id, gold parts)`` or ``(gold id, gold parts,
        bounds)`` with bounds a Scene or ``(width, height)``; without bounds the outline is kept
        within the gold outline's bounding box, which surely lies inside the image."""
        out = []
        for item in items:
            gold_id, gold = item[0], item[1]
            shape = outline_shape(gold)
            minx, miny, maxx, maxy = shape.bounds
            bounds = item[2] if len(item) > 2 else None
            if isinstance(bounds, Scene):
                width, height = bounds.width, bounds.height
                x0, y0 = 0.0, 0.0
            elif bounds is not None:
                width, height = bounds
                x0, y0 = 0.0, 0.0
            else:
                width, height, x0, y0 = maxx, maxy, minx, miny
            if self.profile.spam:
                flat = self._random_outline(x0, y0, width, height)
            else:
                polygon = _largest_polygon(shape) or ShapelyPolygon()
                fallback = [_r(v) for xy in list(polygon.exterior.coords)[:-1] for v in xy] if not polygon.is_empty \
                    else [_r(x0), _r(y0), _r(width), _r(y0), _r(x0), _r(height)]
                if not flat_valid(fallback, width, height):
                    fallback = [_r(x0), _r(y0), _r(width), _r(y0), _r(x0), _r(height)]
                clipped = shape.intersection(box(x0, y0, width, height))
                flat = self._drawn(clipped, width, height, fallback)
            out.append({"item": gold_id, "parts": [flat]})
        return {**_header("training"), "attempt": attempt, "items": out}


def crowd_mix(spec: str, *, seed: int) -> list[SimWorker]:
    """Workers from a spec such as ``"careful:6,sloppy:3,spammer:1"``: ids ``sim-careful-01`` ...,
    each with its own generator drawn from ``seed``."""
    wanted: list[tuple[str, int]] = []
    for chunk in filter(None, (c.strip() for c in spec.split(","))):
        match = re.fullmatch(r"([a-z_]+)\s*:\s*(\d+)", chunk)
        if not match:
            raise ValueError(f"bad crowd spec entry {chunk!r}; write name:count, e.g. careful:6")
        name, count = match.group(1), int(match.group(2))
        if name not in PROFILES:
            raise ValueError(f"unknown worker profile {name!r}; known: {', '.join(PROFILES)}")
        wanted.append((name, count))
    total = sum(c for _, c in wanted)
    seeds = np.random.SeedSequence(seed).spawn(total)
    workers = []
    for name, count in wanted:
        numbered = sum(1 for w in workers if w.profile.name == name)
        for i in range(count):
            rng = np.random.default_rng(seeds[len(workers)])
            workers.append(SimWorker(id=f"sim-{name}-{numbered + i + 1:02d}", profile=PROFILES[name], rng=rng))
    return workers
