"""Filters of list endpoints (django-filter)."""
from __future__ import annotations

import django_filters

from datasets.models import Image, Polygon, Stage


class AnnotationFilter(django_filters.FilterSet):
    image = django_filters.NumberFilter(field_name="image_id")
    category = django_filters.NumberFilter(field_name="category__coco_id", help_text="Category id (COCO id).")
    status = django_filters.ChoiceFilter(choices=Polygon.Status.choices)
    stage = django_filters.ChoiceFilter(choices=Stage.choices)
    is_crowd = django_filters.BooleanFilter()
    min_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="gte")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Polygon
        fields = ["image", "category", "status", "stage", "is_crowd", "min_confidence", "created_after"]


class ImageFilter(django_filters.FilterSet):
    sha256 = django_filters.CharFilter()
    format = django_filters.CharFilter(lookup_expr="iexact")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Image
        fields = ["sha256", "format", "created_after"]
