"""The pipeline as data: which stages a project has, what feeds what, and each stage's numbers.

A stage (``CrowdStage``) consumes what its kind works on and produces what the next kind needs:

============  ==============================  =========================================
kind          consumes (one item)             produces (for the stage it ``feeds``)
============  ==============================  =========================================
categories    an image                        (image, category) pairs found present
spotting      an image and a category         instances (aggregated points)
segmentation  an instance (and its attempt)   an outline
verification  an outline                      accepted outlines; rejected ones go back to
                                              segmentation at most ``max_retries`` times,
                                              then to the requester's review queue
============  ==============================  =========================================

``pipeline_configure`` writes the chain from a preset. A requester changes it in the admin like
any other data: skip a stage by pointing ``feeds`` past it (or deleting it), stop after category
labeling (classification), or start at spotting when the categories are known. Nothing in the
code knows the order; it only follows ``feeds``.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from crowd.models import CrowdStage
from datasets.models import Project, Stage

KIND_ORDER = ["categories", "spotting", "segmentation", "verification"]
CONSUMES = {"categories": "image", "spotting": "image+category", "segmentation": "instance",
            "verification": "outline"}
PRODUCES = {"categories": "image+category", "spotting": "instance", "segmentation": "outline",
            "verification": "accepted outline"}

# COCO's stages and redundancy (Lin et al. 2014, section 3): 8 workers label categories, 8 spot,
# 1 trained worker outlines, 3 to 5 verify.
COCO = {
    "categories": dict(name="Category labeling", max_assignments=8, items_per_hit=5, reward=Decimal("0.06"),
                       aggregation="any", title="Which kinds of objects are in these pictures?",
                       description="Tick every kind of object you can see in each picture."),
    "spotting": dict(name="Instance spotting", max_assignments=8, items_per_hit=1, reward=Decimal("0.04"),
                     title="Click on every object of one kind",
                     description="Put one dot on each object of the kind named, however small."),
    "segmentation": dict(name="Segmentation", max_assignments=1, items_per_hit=1, reward=Decimal("0.08"),
                         require_training=True, title="Outline the object under the dot",
                         description="Draw a tight outline around the object marked by the dot."),
    "verification": dict(name="Verification", max_assignments=5, items_per_hit=5, reward=Decimal("0.04"),
                         max_retries=2, title="Are these outlines good?",
                         description="Accept an outline only if it fits its object tightly."),
}
# Adaptive redundancy: the same caps, but an item stops as soon as its decisions are sure.
ADAPTIVE = {
    "categories": dict(adaptive=True, aggregation="ds", min_answers=3, confidence=0.99),
    "spotting": dict(adaptive=True, min_answers=2),
    "verification": dict(adaptive=True, min_answers=3, confidence=0.95),
}
PRESETS = {
    "coco": KIND_ORDER,
    "classification": ["categories"],
    "known-categories": ["spotting", "segmentation", "verification"],
    "no-verification": ["categories", "spotting", "segmentation"],
}
_STAGE_OF_KIND = {"categories": Stage.CATEGORIES, "spotting": Stage.SPOTTING, "segmentation": Stage.SEGMENTATION,
                  "verification": Stage.VERIFICATION}


@transaction.atomic
def pipeline_configure(*, project: Project, preset: str = "coco", adaptive: bool = False,
                       overrides: dict[str, dict[str, Any]] | None = None, prefix: str = "") -> list[CrowdStage]:
    """Make (or update) the project's stages for ``preset`` and chain them; returns them in order.

    ``overrides``: per kind, any ``CrowdStage`` field (e.g. ``{"categories": {"max_assignments": 5}}``).
    Running it again updates the same stages (found by name) instead of adding new ones.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    overrides = overrides or {}
    stages: list[CrowdStage] = []
    for kind in PRESETS[preset]:
        values = dict(COCO[kind])
        if adaptive:
            values.update(ADAPTIVE.get(kind, {}))
        values.update(overrides.get(kind, {}))
        name = prefix + values.pop("name")
        values.update(kind=kind, stage=_STAGE_OF_KIND[kind], feeds=None, in_pipeline=True)
        values.setdefault("keywords", "image,labeling,objects")
        stage, _ = CrowdStage.objects.update_or_create(project=project, name=name, defaults=values)
        stages.append(stage)
    for stage, nxt in zip(stages, stages[1:]):
        CrowdStage.objects.filter(pk=stage.pk).update(feeds=nxt)
        stage.feeds = nxt
    return stages


def chain_of(project_id: int) -> list[CrowdStage]:
    """The project's pipeline stages from the entry stage(s) along ``feeds`` (training excluded)."""
    stages = list(CrowdStage.objects.filter(project_id=project_id, kind__in=KIND_ORDER, in_pipeline=True)
                  .order_by("id"))
    fed = {s.feeds_id for s in stages if s.feeds_id}
    order: list[CrowdStage] = []
    by_id = {s.pk: s for s in stages}
    for entry in (s for s in stages if s.pk not in fed):
        stage = entry
        while stage is not None and stage not in order:
            order.append(stage)
            stage = by_id.get(stage.feeds_id)
    return order


def redraw_stage(verification: CrowdStage) -> CrowdStage | None:
    """Where a rejected outline goes back to: the segmentation stage feeding this verification."""
    return CrowdStage.objects.filter(feeds=verification, kind="segmentation").first()
