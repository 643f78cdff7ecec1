"""``manage.py backup FOLDER``: the database and the media store, into a new folder.

See ``_backup.py`` for what the folder holds and ``docs/operations.md`` for the procedure.
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotator.management.commands._backup import BackupError, backup_create


class Command(BaseCommand):
    help = "Back up the database (pg_dump, or SQLite's online backup) and every media file into FOLDER."

    def add_arguments(self, parser):
        parser.add_argument("folder", help="a new or empty folder for this backup")

    def handle(self, *args, **options):
        try:
            manifest = backup_create(folder=Path(options["folder"]), say=self.stdout.write)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Backup written to {options['folder']} at {manifest['created_at']}."))
