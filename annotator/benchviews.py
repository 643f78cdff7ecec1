"""Views for benchmarks only, mounted under ``/bench/`` when ``BENCHMARK_VIEWS`` is on (off by default).

``row`` is the load benchmark's baseline (``benchmarks/load.py``): the least a Django view can do
against the database, one row read by its primary key and sent back as JSON, through the same
middleware, the same gunicorn and the same PostgreSQL as the platform's pages.
"""
from __future__ import annotations

from django.http import Http404, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET

from datasets.models import Image


@require_GET
def row(request, pk: int) -> JsonResponse:
    found = Image.objects.filter(pk=pk).values("id", "width", "height", "sha256").first()
    if found is None:
        raise Http404("No such row.")
    return JsonResponse(found)


app_name = "bench"
urlpatterns = [path("row/<int:pk>", row, name="row")]
