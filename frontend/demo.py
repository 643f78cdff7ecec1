"""Demo records every tool needs, made once per project (``make_task_links``, ``demo_crowd``).

- a spotted point (segmentation outlines it);
- accepted outlines, one per image: known (gold) outlines for training;
- pending outlines on a couple of images: work for verification.

Each kind is made only when the project has none of its own (pending outlines: when none were
ever seeded, so a project whose demo outlines were verified gets no new ones), so calling
``demo_seed`` again changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from datasets.models import Category, Image, InstancePoint, Polygon, Project, Stage
from datasets.services.geometry import outline_check

SEEDED_BY = "demo"
PENDING_SEEDED_BY = "demo-pending"


@dataclass
class DemoSeed:
    images: list[Image]
    category: Category
    point: InstancePoint
    gold: list[Polygon]  # accepted outlines
    pending: list[Polygon]  # outlines waiting for verification


def _box(image: Image, scale: float = 0.3) -> list[float]:
    """A diamond in the middle of an image, for demo outlines when none exist yet."""
    cx, cy, rx, ry = image.width / 2, image.height / 2, image.width * scale / 2, image.height * scale / 2
    return [cx, cy - ry, cx + rx, cy, cx, cy + ry, cx - rx, cy]


def _outline(*, image: Image, category: Category, scale: float, status: str, made_by: str) -> Polygon:
    outline = outline_check(parts=[_box(image, scale)], width=image.width, height=image.height)
    return Polygon.objects.create(image=image, category=category, parts=outline.parts, area=outline.area,
                                  bbox=outline.bbox, stage=Stage.REQUESTER, made_by=made_by, status=status)


class DemoSeedError(ValueError):
    pass


@transaction.atomic
def demo_seed(*, project: Project, pending_images: int = 2) -> DemoSeed:
    images = list(Image.objects.filter(project=project).order_by("id")[: settings.TOOLS_CATEGORY_BATCH])
    category = Category.objects.filter(project=project).order_by("id").first()
    if not images or category is None:
        raise DemoSeedError("The project needs images and categories first (manage.py load_demo).")
    image = images[0]
    point = InstancePoint.objects.filter(image=image, category=category).order_by("id").first() \
        or InstancePoint.objects.create(image=image, category=category, x=image.width / 2, y=image.height / 2,
                                        stage=Stage.REQUESTER, made_by=SEEDED_BY)
    accepted = Polygon.objects.filter(image__project=project, status=Polygon.Status.ACCEPTED).order_by("id")
    if not accepted.exists():
        for img in images:
            _outline(image=img, category=category, scale=0.3, status=Polygon.Status.ACCEPTED, made_by=SEEDED_BY)
    pending = Polygon.objects.filter(image__project=project, status=Polygon.Status.PENDING).order_by("id")
    seeded = Polygon.objects.filter(image__project=project, made_by=PENDING_SEEDED_BY)
    if not pending.exists() and not seeded.exists():
        for img in images[:pending_images]:
            _outline(image=img, category=category, scale=0.25, status=Polygon.Status.PENDING,
                     made_by=PENDING_SEEDED_BY)
    return DemoSeed(images=images, category=category, point=point, gold=list(accepted[:12]),
                    pending=list(pending[:12]))
