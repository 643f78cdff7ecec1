"""``manage.py import_categories PROJECT [FILE.json] [--coco]``: add categories to a project.

FILE.json is a COCO file (its ``categories`` list) or a bare list of ``{"id", "name",
"supercategory"}``; ``--coco`` adds COCO 2017's 80. Categories already there are kept; a clash
(same id with another name) changes nothing and says which.
"""
from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from datasets.management.commands.import_images import project_lookup
from datasets.services.categories import categories_add, categories_add_coco


class Command(BaseCommand):
    help = "Add categories to a project from a COCO categories JSON file, or COCO's 80 with --coco."

    def add_arguments(self, parser):
        parser.add_argument("project", help="The project's id or exact name.")
        parser.add_argument("file", nargs="?", help="A COCO JSON file (or a list of categories).")
        parser.add_argument("--coco", action="store_true", help="Add COCO 2017's 80 categories.")

    def handle(self, *args, project, file, coco, **options):
        target = project_lookup(project)
        if not file and not coco:
            raise CommandError("Give FILE.json, --coco, or both.")
        try:
            if coco:
                created, unchanged = categories_add_coco(project=target)
                self.stdout.write(f"COCO's categories: {created} added, {unchanged} already there.")
            if file:
                try:
                    data = json.loads(Path(file).read_text())
                except OSError as exc:
                    raise CommandError(f"{file}: cannot be read ({exc.strerror}).") from None
                except json.JSONDecodeError as exc:
                    raise CommandError(f"{file}: not valid JSON ({exc}).") from None
                created, unchanged = categories_add(project=target, entries=data)
                self.stdout.write(f"{Path(file).name}: {created} categories added, {unchanged} already there.")
        except ValidationError as exc:
            raise CommandError(f"{file or 'COCO'}: {' '.join(exc.messages)}") from None
