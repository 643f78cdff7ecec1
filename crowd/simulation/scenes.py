"""Procedural scenes with exact ground truth, for simulating the crowd pipeline.

A scene is an image of a few objects on a textured background. Every object has a category, one
polygon (its outline, in image pixels), a point inside it and its area; objects of a scene never
touch, so the truth outline is also the visible outline.

The look of an object follows its category's index in the list passed to ``scenes_generate``:

    shape family   index % 6: ellipse, rounded box, star, blob, cross, gear
    variant        index // 6 changes the family's parameters (star spikes, gear teeth, aspect)
    colour         a hue stepped by the golden ratio from the index, saturated on a muted ground

so that a person could label the rendered JPEG as well as a simulated worker. Sizes vary: about a
third of the objects are small (a radius of 2.5 to 4.5 % of the image's shorter side), the kind a
careless worker overlooks. Everything is drawn from one NumPy generator, so a seed gives the same
scenes, byte for byte, every time.

    scenes = scenes_generate(n=100, categories=["cat", "dog", "car"], seed=7)
    scenes[0].count("cat"), scenes[0].objects[0].parts, scenes[0].jpeg()
"""
from __future__ import annotations

import colorsys
import io
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from shapely.geometry import Polygon as ShapelyPolygon

FAMILIES = ("ellipse", "rounded box", "star", "blob", "cross", "gear")
SMALL_SHARE = 0.3  # share of objects drawn small (never under MIN_RADIUS_PX)
SMALL_RADIUS = (0.025, 0.045)  # radius as a share of the image's shorter side
LARGE_RADIUS = (0.06, 0.2)
MIN_RADIUS_PX = 4.0  # smaller than that, an object is a speck
GAP_PX = 3.0  # least distance between two objects of a scene
PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class TruthObject:
    category: str
    parts: list[list[float]]  # one part: [x1, y1, x2, y2, ...], image pixels, 0.1 px
    center: tuple[float, float]  # a point well inside the object
    area: float


@dataclass(frozen=True)
class Scene:
    name: str
    width: int
    height: int
    objects: tuple[TruthObject, ...]
    # (category, RGB) pairs the renderer fills objects with; scenes_generate sets it from the
    # categories' indices, a hand-made scene may leave it empty (colours then follow the names).
    palette: tuple[tuple[str, tuple[int, int, int]], ...] = field(default=(), compare=False, repr=False)

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(o.category for o in self.objects)

    def count(self, category: str) -> int:
        return sum(1 for o in self.objects if o.category == category)

    def of_category(self, category: str) -> list[TruthObject]:
        return [o for o in self.objects if o.category == category]

    def jpeg(self, quality: int = 90) -> bytes:
        """The scene drawn as a JPEG: a textured ground and each object filled in its category's colour."""
        image = scene_render(self)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        return out.getvalue()


# --- Shapes --------------------------------------------------------------------------------------
# Every family is star-shaped around its centre (each ray from the centre crosses the outline
# once), so its polygon is simple and the centre lies inside it.

def _radial(radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _shape_points(family: int, variant: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Vertices (n x 2) of a shape of ``radius`` centred on the origin, unrotated; 8 to 40 of them."""
    if family == 0:  # ellipse
        aspect = rng.uniform(0.55, 1.0)
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        return np.stack([radius * np.cos(t), radius * aspect * np.sin(t)], axis=1)
    if family == 1:  # rounded box
        a = radius
        b = radius * rng.uniform(0.5, 0.95)
        r = 0.3 * min(a, b)
        points = []
        for cx, cy, start in ((a - r, b - r, 0.0), (-(a - r), b - r, 0.5), (-(a - r), -(b - r), 1.0),
                              (a - r, -(b - r), 1.5)):
            for t in np.linspace(start * math.pi, (start + 0.5) * math.pi, 5):
                points.append((cx + r * math.cos(t), cy + r * math.sin(t)))
        return np.array(points)
    if family == 2:  # star
        spikes = 5 + variant % 3
        t = np.linspace(0, 2 * math.pi, 2 * spikes, endpoint=False)
        radii = np.where(np.arange(2 * spikes) % 2 == 0, radius, radius * rng.uniform(0.45, 0.55))
        return _radial(radii, t)
    if family == 3:  # blob: a circle bent by a few random harmonics
        t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
        bend = np.zeros_like(t)
        for k in (2, 3, 4):
            bend += rng.uniform(0.0, 0.12) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
        return _radial(radius * (1 + bend), t)
    if family == 4:  # cross (a plus sign)
        w = radius * rng.uniform(0.3, 0.45)
        r = radius
        return np.array([(w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w), (-w, -r), (w, -r),
                         (w, -w), (r, -w), (r, w)])[::-1]
    # gear: teeth with flat tops
    teeth = 8 + variant % 2
    inner = radius * 0.72
    points = []
    step = 2 * math.pi / teeth
    for i in range(teeth):
        a0 = i * step
        for frac, rad in ((0.0, inner), (0.2, radius), (0.5, radius), (0.7, inner)):
            a = a0 + frac * step
            points.append((rad * math.cos(a), rad * math.sin(a)))
    return np.array(points)


def _place(points: np.ndarray, angle: float, cx: float, cy: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rotated = points @ np.array([[c, s], [-s, c]])
    return rotated + np.array([cx, cy])


def _flat(points: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in points.reshape(-1)]


def _shapely(flat: list[float]) -> ShapelyPolygon:
    return ShapelyPolygon(list(zip(flat[0::2], flat[1::2])))


# --- Generation ----------------------------------------------------------------------------------

def _scene_objects(rng: np.random.Generator, categories: list[str], width: int, height: int,
                   max_categories: int, max_instances: int) -> tuple[TruthObject, ...]:
    k = int(rng.integers(1, min(max_categories, len(categories)) + 1))
    chosen = sorted(int(i) for i in rng.choice(len(categories), size=k, replace=False))
    side = min(width, height)
    wanted = []  # (radius, category index)
    for index in chosen:
        for _ in range(int(rng.integers(1, max_instances + 1))):
            low, high = SMALL_RADIUS if rng.random() < SMALL_SHARE else LARGE_RADIUS
            wanted.append((max(float(rng.uniform(low, high) * side), MIN_RADIUS_PX), index))
    wanted.sort(key=lambda w: -w[0])  # the large ones first: they are the hardest to fit
    placed: list[tuple[TruthObject, ShapelyPolygon]] = []
    for radius, index in wanted:
        family, variant = index % len(FAMILIES), index // len(FAMILIES)
        base = _shape_points(family, variant, radius, rng)
        for _ in range(PLACEMENT_TRIES):
            margin = radius + 1.5
            if width <= 2 * margin or height <= 2 * margin:
                break
            cx, cy = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
            flat = _flat(_place(base, rng.uniform(0, 2 * math.pi), cx, cy))
            xs, ys = flat[0::2], flat[1::2]
            if min(xs) < 1 or min(ys) < 1 or max(xs) > width - 1 or max(ys) > height - 1:
                continue
            shape = _shapely(flat)
            if not shape.is_valid or shape.area <= 0:
                continue
            if any(shape.distance(other) < GAP_PX for _, other in placed):
                continue
            obj = TruthObject(category=categories[index], parts=[flat], center=(round(cx, 1), round(cy, 1)),
                              area=round(float(shape.area), 2))
            placed.append((obj, shape))
            break
    return tuple(obj for obj, _ in placed)


def scenes_generate(*, n: int, categories: list[str], seed: int, width: int = 320, height: int = 240,
                    max_categories: int = 3, max_instances: int = 4, empty_share: float = 0.1) -> list[Scene]:
    """``n`` scenes named ``scene-00000`` on; each holds up to ``max_categories`` categories with
    1 to ``max_instances`` objects each (fewer when they do not fit), or nothing (``empty_share``)."""
    if not categories:
        raise ValueError("scenes need at least one category")
    if len(set(categories)) != len(categories):
        raise ValueError("category names must be unique")
    rng = np.random.default_rng(seed)
    palette = tuple((name, category_colour(name, i)) for i, name in enumerate(categories))
    scenes = []
    for i in range(n):
        if rng.random() < empty_share:
            objects: tuple[TruthObject, ...] = ()
        else:
            objects = _scene_objects(rng, list(categories), width, height, max_categories, max_instances)
        used = {o.category for o in objects}
        scenes.append(Scene(name=f"scene-{i:05d}", width=width, height=height, objects=objects,
                            palette=tuple(p for p in palette if p[0] in used)))
    return scenes


# --- Rendering -----------------------------------------------------------------------------------

def category_colour(category: str, index: int | None = None) -> tuple[int, int, int]:
    """A saturated colour per category: from its index when known, else from its name."""
    key = index if index is not None else zlib.crc32(category.encode())
    hue = (key * 0.6180339887) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.92)
    return int(r * 255), int(g * 255), int(b * 255)


def scene_render(scene: Scene) -> Image.Image:
    """Draw ``scene`` (RGB, its own size): a muted noise texture, then the objects, anti-aliased."""
    rng = np.random.default_rng(zlib.crc32(scene.name.encode()))
    w, h = scene.width, scene.height
    scale = 2
    tint = np.array([1.0, 0.95, 0.8]) * rng.uniform(0.85, 1.1, size=3)  # an earthy, muted ground
    light = rng.uniform(80, 150, size=(h // 24 + 2, w // 24 + 2, 1))
    coarse = light * tint + rng.normal(0, 6, size=light.shape[:2] + (3,))
    ground = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "RGB")
    ground = ground.resize((w * scale, h * scale), Image.BICUBIC)
    grain = rng.normal(0, 7, size=(h * scale, w * scale, 1))
    ground = Image.fromarray(np.clip(np.asarray(ground, dtype=float) + grain, 0, 255).astype(np.uint8), "RGB")
    ground = ground.filter(ImageFilter.GaussianBlur(0.8))
    draw = ImageDraw.Draw(ground)
    palette = dict(scene.palette)
    for obj in scene.objects:
        colour = palette.get(obj.category) or category_colour(obj.category)
        shade = float(rng.uniform(0.85, 1.0))
        fill = tuple(int(c * shade) for c in colour)
        edge = tuple(int(c * 0.55) for c in colour)
        for part in obj.parts:
            xy = [(x * scale, y * scale) for x, y in zip(part[0::2], part[1::2])]
            draw.polygon(xy, fill=fill, outline=edge, width=2)
    return ground.resize((w, h), Image.LANCZOS)
