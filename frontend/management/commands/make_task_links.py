"""Print one link per tool for a project, to try the labeling tools by hand (the demo)."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from datasets.models import Polygon, Project
from frontend.demo import DemoSeedError, demo_seed
from frontend.models import Kind
from frontend.services import task_create


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
        try:
            seed = demo_seed(project=proj)
        except DemoSeedError as exc:
            raise CommandError(str(exc)) from None
        image, category = seed.images[0], seed.category
        polygons = list(Polygon.objects.filter(image__project=proj).exclude(status=Polygon.Status.REJECTED)[:12])
        links = {
            Kind.CATEGORIES: task_create(kind=Kind.CATEGORIES, project=proj, images=seed.images),
            Kind.SPOTTING: task_create(kind=Kind.SPOTTING, project=proj, images=[image], category=category),
            Kind.SEGMENTATION: task_create(kind=Kind.SEGMENTATION, project=proj, point=seed.point),
            Kind.VERIFICATION: task_create(kind=Kind.VERIFICATION, project=proj, polygons=polygons),
            Kind.TRAINING: task_create(kind=Kind.TRAINING, project=proj, polygons=seed.gold[:2]),
        }
        for kind, url in links.items():
            if mturk:
                url += "?assignmentId=DEMO-ASSIGNMENT&hitId=DEMO-HIT&workerId=DEMO-WORKER&turkSubmitTo=" \
                       + settings.PUBLIC_BASE_URL
            self.stdout.write(f"{kind:<13} {url}")
