"""outline_check: the server's last word on a polygon before it is stored."""
from __future__ import annotations

import math

import pytest
from django.core.exceptions import ValidationError

from datasets.services.geometry import MAX_PARTS, outline_check


def test_a_square_is_measured():
    outline = outline_check(parts=[[10, 10, 30, 10, 30, 40, 10, 40]], width=100, height=50)
    assert outline.area == pytest.approx(600)
    assert outline.bbox == [10, 10, 20, 30]
    assert outline.parts == [[10.0, 10.0, 30.0, 10.0, 30.0, 40.0, 10.0, 40.0]]


def test_a_self_intersecting_bow_tie_is_refused_with_a_clear_message():
    with pytest.raises(ValidationError) as info:
        outline_check(parts=[[0, 0, 10, 10, 10, 0, 0, 10]], width=20, height=20)
    message = info.value.messages[0]
    assert message.startswith("Part 1 crosses itself")
    assert "redraw it without crossing edges" in message


def test_fewer_than_three_vertices_is_refused():
    with pytest.raises(ValidationError, match="at least 3 vertices, this one has 2"):
        outline_check(parts=[[0, 0, 10, 10]], width=20, height=20)


def test_an_odd_count_of_numbers_is_refused():
    with pytest.raises(ValidationError, match="odd count of numbers"):
        outline_check(parts=[[0, 0, 10, 10, 5]], width=20, height=20)


def test_a_vertex_outside_the_image_is_refused():
    with pytest.raises(ValidationError, match=r"vertex 2 \(25, 0\) lies outside the 20x20 image"):
        outline_check(parts=[[0, 0, 25, 0, 10, 10]], width=20, height=20)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "3", None, True])
def test_coordinates_must_be_finite_numbers(bad):
    with pytest.raises(ValidationError, match="finite number"):
        outline_check(parts=[[0, 0, bad, 0, 10, 10]], width=20, height=20)


def test_no_parts_and_too_many_parts_are_refused():
    with pytest.raises(ValidationError, match="at least one part"):
        outline_check(parts=[], width=20, height=20)
    square = [0, 0, 1, 0, 1, 1, 0, 1]
    with pytest.raises(ValidationError, match=f"at most {MAX_PARTS} parts"):
        outline_check(parts=[square] * (MAX_PARTS + 1), width=20, height=20)


def test_a_flat_outline_has_no_area():
    with pytest.raises(ValidationError, match="Part 1"):
        outline_check(parts=[[0, 0, 5, 5, 10, 10]], width=20, height=20)


def test_two_parts_are_measured_together():
    outline = outline_check(parts=[[0, 0, 2, 0, 2, 2, 0, 2], [5, 5, 9, 5, 9, 9, 5, 9]], width=10, height=10)
    assert outline.area == pytest.approx(4 + 16)
    assert outline.bbox == [0, 0, 9, 9]
