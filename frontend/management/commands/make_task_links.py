"""Print one link per tool for a project, to try the labeling tools by hand (the demo)."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from datasets.models import Category, Image, InstancePoint, Polygon, Project, Stage
from datasets.services.geometry import outline_check
from frontend.models import Kind
from frontend.services import task_create


def _box(image: Image, scale: float = 0.3) -> list[float]:
    """A diamond in the middle of an image, for demo outlines when none exist yet."""
    cx, cy, rx, ry = image.width / 2, image.height / 2, image.width * scale / 2, image.height * scale / 2
    return [cx, cy - ry, cx + rx, cy, cx, cy + ry, cx - rx, cy]


class Command(BaseCommand):
    help = "Print task links (one per tool) for PROJECT (its id or name), making demo records as needed."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project id or exact name, e.g. 'Demo: everyday photos'")
        parser.add_argument("--mturk", action="store_true", help="add a sandbox-style MTurk query string")

    @transaction.atomic
    def handle(self, *args, project: str, mturk: bool, **options):
        qs = Project.objects.filter(pk=int(project)) if project.isdigit() else Project.objects.filter(name=project)
        proj = qs.first()
        if proj is None:
            raise CommandError(f"No project {project!r}.")
        images = list(Image.objects.filter(project=proj)[: settings.TOOLS_CATEGORY_BATCH])
        category = Category.objects.filter(project=proj).first()
        if not images or category is None:
            raise CommandError("The project needs images and categories first (manage.py load_demo).")
        image = images[0]
        point = InstancePoint.objects.filter(image=image, category=category).first() or InstancePoint.objects.create(
            image=image, category=category, x=image.width / 2, y=image.height / 2,
            stage=Stage.REQUESTER, made_by="make_task_links")
        polygons = list(Polygon.objects.filter(image__project=proj).exclude(status=Polygon.Status.REJECTED)[:12])
        if not polygons:
            for img in images:
                outline = outline_check(parts=[_box(img)], width=img.width, height=img.height)
                polygons.append(Polygon.objects.create(
                    image=img, category=category, parts=outline.parts, area=outline.area, bbox=outline.bbox,
                    stage=Stage.REQUESTER, made_by="make_task_links", status=Polygon.Status.ACCEPTED))
        links = {
            Kind.CATEGORIES: task_create(kind=Kind.CATEGORIES, project=proj, images=images),
            Kind.SPOTTING: task_create(kind=Kind.SPOTTING, project=proj, images=[image], category=category),
            Kind.SEGMENTATION: task_create(kind=Kind.SEGMENTATION, project=proj, point=point),
            Kind.VERIFICATION: task_create(kind=Kind.VERIFICATION, project=proj, polygons=polygons),
            Kind.TRAINING: task_create(kind=Kind.TRAINING, project=proj, polygons=polygons[:2]),
        }
        for kind, url in links.items():
            if mturk:
                url += "?assignmentId=DEMO-ASSIGNMENT&hitId=DEMO-HIT&workerId=DEMO-WORKER&turkSubmitTo=" \
                       + settings.PUBLIC_BASE_URL
            self.stdout.write(f"{kind:<13} {url}")
