"""``manage.py demo_crowd --owner admin``: the demo project's work for every tool, as HITs in our
marketplace, and a demo worker to do it (see ``crowd.demo``). Safe to run again."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from crowd.demo import DEMO_PROJECT, demo_crowd
from datasets.models import Project


class Command(BaseCommand):
    help = "Publish the demo project's work (all five tools) in our marketplace and make a demo worker."

    def add_arguments(self, parser):
        parser.add_argument("--owner", default="admin", help="The demo project's owner (the requester).")
        parser.add_argument("--base-url", default=None,
                            help="Where the platform answers (default PUBLIC_BASE_URL).")

    def handle(self, *args, owner: str, base_url: str | None, **options):
        if not Project.objects.filter(name=DEMO_PROJECT, owner__username=owner).exists():
            raise CommandError(f"No project {DEMO_PROJECT!r} of {owner!r}; run manage.py load_demo first.")
        report = demo_crowd(owner=owner, base_url=base_url)
        if report.key_created:
            self.stdout.write(f"Made a marketplace requester key for {owner} "
                              f"(saved in {settings.VAR_DIR / 'requester-key.json'}).")
        if report.queued:
            self.stdout.write(f"Demo crowd: publishing HITs for {', '.join(report.queued)} (Celery).")
        else:
            self.stdout.write("Demo crowd: the demo's HITs are already published.")
        if report.worker_password:
            self.stdout.write(f"Created the demo worker: {report.worker_username} / {report.worker_password}  "
                              f"(kept in {report.worker_password_file}); log in at {report.market_url}")
        else:
            self.stdout.write(f"Demo worker: {report.worker_username} (its password is in "
                              f"{report.worker_password_file}); log in at {report.market_url}")
