"""Server-side geometry of stage records: checking and measuring outlines with shapely."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from django.core.exceptions import ValidationError
from shapely import make_valid
from shapely.geometry import MultiPolygon
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.validation import explain_validity

MAX_VERTICES_PER_PART = 10_000
MAX_PARTS = 50


@dataclass(frozen=True)
class Outline:
    parts: list[list[float]]  # flat [x1, y1, x2, y2, ...] per part, as COCO stores them
    area: float
    bbox: list[float]  # [x, y, width, height]


def _check_part(index: int, part: Any, width: int, height: int) -> list[float]:
    label = f"Part {index}"
    if not isinstance(part, (list, tuple)):
        raise ValidationError(f"{label}: expected a list of numbers [x1, y1, x2, y2, ...].")
    if len(part) % 2:
        raise ValidationError(f"{label}: an odd count of numbers ({len(part)}); coordinates come in x, y pairs.")
    vertices = len(part) // 2
    if vertices < 3:
        raise ValidationError(f"{label}: an outline needs at least 3 vertices, this one has {vertices}.")
    if vertices > MAX_VERTICES_PER_PART:
        raise ValidationError(f"{label}: {vertices} vertices, more than the limit of {MAX_VERTICES_PER_PART}.")
    flat: list[float] = []
    for value in part:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError(f"{label}: every coordinate must be a finite number, got {value!r}.")
        flat.append(float(value))
    for i in range(0, len(flat), 2):
        x, y = flat[i], flat[i + 1]
        if not (0 <= x <= width and 0 <= y <= height):
            raise ValidationError(
                f"{label}: vertex {i // 2 + 1} ({x:g}, {y:g}) lies outside the {width}x{height} image."
            )
    return flat


def outline_check(*, parts: Sequence[Any], width: int, height: int) -> Outline:
    """Check an outline made of one or more parts and measure it.

    Refuses (ValidationError, with the reason): no parts, too many, fewer than 3 vertices,
    coordinates that are not finite numbers or fall outside the image, a part that crosses
    itself, and parts with no area.
    """
    if not isinstance(parts, (list, tuple)) or not parts:
        raise ValidationError("An outline needs at least one part.")
    if len(parts) > MAX_PARTS:
        raise ValidationError(f"An outline has at most {MAX_PARTS} parts, this one has {len(parts)}.")
    flats = [_check_part(i, part, width, height) for i, part in enumerate(parts, start=1)]
    shapes = []
    for i, flat in enumerate(flats, start=1):
        shape = ShapelyPolygon(list(zip(flat[0::2], flat[1::2])))
        if not shape.is_valid:
            reason = explain_validity(shape)
            if "Self-intersection" in reason or "Ring Self-intersection" in reason:
                raise ValidationError(f"Part {i} crosses itself ({reason}); redraw it without crossing edges.")
            raise ValidationError(f"Part {i} is not a valid outline: {reason}.")
        if shape.area <= 0:
            raise ValidationError(f"Part {i} has no area.")
        shapes.append(shape)
    union = make_valid(MultiPolygon(shapes)) if len(shapes) > 1 else shapes[0]
    minx, miny, maxx, maxy = union.bounds
    return Outline(
        parts=flats,
        area=float(union.area),
        bbox=[minx, miny, maxx - minx, maxy - miny],
    )
