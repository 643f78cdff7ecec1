"""``manage.py load_demo --owner admin``: the demo project, its categories and five photos.

Idempotent: the project is found by name and owner, COCO's categories already there are kept,
and the photos are imported only when some of them are missing (through the ingestion service,
with the licence, attribution and source URL from ``datasets/demo/photos.json``). A second run
changes nothing and creates no new import.
"""
from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from datasets.models import Image, Project
from datasets.services.categories import categories_add_coco
from datasets.services.ingest import file_sha256, images_import
from datasets.services.ingest_sources import local_file_candidate, source_files

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"


def demo_manifest() -> dict:
    return json.loads((DEMO_DIR / "photos.json").read_text())


class Command(BaseCommand):
    help = "Create (once) the demo project 'Demo: everyday photos' with COCO's categories and five photos."

    def add_arguments(self, parser):
        parser.add_argument("--owner", default="admin", help="Username of the project's owner (must exist).")

    def handle(self, *args, owner: str, **options):
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"No user {owner!r}; create it first (manage.py createsuperuser).")
        manifest = demo_manifest()
        with transaction.atomic():
            project = Project.objects.filter(name=manifest["project"], owner=user).order_by("pk").first()
            created = project is None
            if created:
                project = Project.objects.create(name=manifest["project"], description=manifest["description"], owner=user)
            added, _ = categories_add_coco(project=project)

        candidates = []
        for photo in manifest["photos"]:
            path = DEMO_DIR / "photos" / photo["file"]
            if Image.objects.filter(project=project, sha256=file_sha256(path)).exists():
                continue
            candidates.append(local_file_candidate(
                path, photo["file"], license=photo["license"], attribution=photo["attribution"],
                source_url=photo["source_url"],
            ))
        imported = 0
        if candidates:
            result = images_import(
                project=project, source=source_files(candidates, detail="demo photos (datasets/demo)"),
                created_by=user,
            )
            imported = result.imported
            for entry in result.report:
                if entry["status"] == "failed":
                    self.stderr.write(f"{entry['name']}: {entry['reason']}")
        if created or added or imported:
            self.stdout.write(
                f"Demo project {project.name!r} (#{project.pk}): {added} categories and {imported} photos added."
            )
        else:
            self.stdout.write(f"Demo project {project.name!r} (#{project.pk}) is already loaded.")
