"""``manage.py import_images PROJECT SOURCE``: import images from this server, URLs or S3.

SOURCE is a folder, a zip or tar archive, or one image file. ``--urls FILE`` reads a list of
URLs (one a line) and ``--s3 s3://bucket/prefix`` lists a bucket. Several sources may be given;
each becomes its own import. Prints a progress bar, a summary and every failure with its reason.
Exits non-zero only when nothing could be read at all.
"""
from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from datasets.models import ImageImport, Project
from datasets.services.ingest import images_import, report_message, source_for_path
from datasets.services.ingest_sources import SourceError, parse_url_list, source_s3, source_urls


def project_lookup(value: str) -> Project:
    """A project by id, or by exact name when that name is unique."""
    if value.isdigit():
        project = Project.objects.filter(pk=int(value)).first()
        if project:
            return project
    matches = list(Project.objects.filter(name=value)[:2])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise CommandError(f"Several projects are called {value!r}; give the project's id instead.")
    raise CommandError(f"No project with the id or name {value!r}.")


class Command(BaseCommand):
    help = "Import JPEG, PNG and WebP images into a project from a folder, an archive, URLs or S3."

    def add_arguments(self, parser):
        parser.add_argument("project", help="The project's id or exact name.")
        parser.add_argument("source", nargs="*", help="Folders, zip/tar archives or image files on this server.")
        parser.add_argument("--urls", action="append", default=[], metavar="FILE", help="A text file with one image URL a line.")
        parser.add_argument("--s3", action="append", default=[], metavar="S3_URL", help="s3://bucket/prefix to import every object under.")
        parser.add_argument("--endpoint-url", default=None, help="S3 endpoint (default: settings.AWS_S3_ENDPOINT_URL).")
        parser.add_argument("--license", default="", help="Licence recorded on every imported image.")
        parser.add_argument("--attribution", default="", help="Attribution recorded on every imported image.")
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args, project, source, urls, s3, endpoint_url, license, attribution, no_progress, **options):
        target = project_lookup(project)
        if len(license) > 200 or len(attribution) > 500:
            raise CommandError("--license is at most 200 characters and --attribution at most 500.")
        sources = []
        unreadable: list[str] = []
        for item in source:
            try:
                sources.append(source_for_path(Path(item)))
            except SourceError as exc:
                unreadable.append(str(exc))
        for url_file in urls:
            try:
                text = Path(url_file).read_text()
            except OSError as exc:
                unreadable.append(f"{url_file}: cannot be read ({exc.strerror})")
                continue
            sources.append(source_urls(parse_url_list(text), detail=f"URLs from {Path(url_file).name}"))
        for s3_url in s3:
            try:
                sources.append(source_s3(s3_url, endpoint_url=endpoint_url))
            except SourceError as exc:
                unreadable.append(str(exc))
        if not sources and not unreadable:
            raise CommandError("Give a SOURCE, --urls FILE or --s3 s3://bucket/prefix.")

        usable = 0  # images imported or already there
        seen = 0
        for src in sources:
            bar = tqdm(total=src.count(), desc=src.detail[:40], unit="file", disable=no_progress or None, file=sys.stderr)
            try:
                result = images_import(
                    project=target, source=src, license=license, attribution=attribution,
                    progress=lambda entry, bar=bar: bar.update(1),
                )
            finally:
                bar.close()
            self._summary(result)
            if result.status == ImageImport.Status.FAILED:
                unreadable.append(result.error)
            usable += result.imported + result.duplicates
            seen += result.total
        for message in unreadable:
            self.stderr.write(self.style.ERROR(message))
        if usable == 0 and (unreadable or seen):
            raise CommandError("Nothing could be read: no image was imported or found already in the project.")
        if seen == 0 and not unreadable:
            self.stdout.write(self.style.WARNING("No files were found."))

    def _summary(self, result: ImageImport) -> None:
        self.stdout.write(
            f"Import #{result.pk} into {result.project.name!r} from {result.source_detail}: "
            f"{result.imported} imported, {result.duplicates} duplicate(s), {result.failed} failed "
            f"(of {result.total})."
        )
        failures = [e for e in result.report if e["status"] == "failed"]
        if failures:
            self.stdout.write(self.style.WARNING(f"{len(failures)} file(s) not imported:"))
            for entry in failures:
                self.stdout.write(f"  {report_message(entry)}")
        if result.status == ImageImport.Status.FAILED and result.error:
            self.stdout.write(self.style.ERROR(f"  {result.error}"))
