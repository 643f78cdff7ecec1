"""``manage.py restore FOLDER``: put back a backup made by ``manage.py backup``.

The database is replaced by the backed-up one; every backed-up media file is written back. Both
are then compared with the backup's record (row counts per table, sha256 per file).
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotator.management.commands._backup import BackupError, backup_restore


class Command(BaseCommand):
    help = "Restore the database and media files from a backup FOLDER, replacing the database's contents."

    def add_arguments(self, parser):
        parser.add_argument("folder", help="a folder written by manage.py backup")
        parser.add_argument("--yes", action="store_true", help="do not ask before replacing the database")

    def handle(self, *args, **options):
        folder = Path(options["folder"])
        if not options["yes"]:
            answer = input(f"Replace this server's database and media with the backup in {folder}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Nothing restored.")
        try:
            manifest = backup_restore(folder=folder, say=self.stdout.write)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Restored the backup of {manifest['created_at']}; it matches its record."))
