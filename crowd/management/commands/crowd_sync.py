"""Run the crowd sync now, in this process (what the ``crowd-sync`` beat entry queues).

    manage.py crowd_sync                 # every stage with HITs out
    manage.py crowd_sync --stage 3 --collect
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from crowd import selectors, services
from crowd.providers.base import ProviderError


class Command(BaseCommand):
    help = "Review, pay and clean up submitted crowd work now (ListReviewableHITs, then per HIT)."

    def add_arguments(self, parser):
        parser.add_argument("--stage", type=int, action="append", help="Only this CrowdStage id (repeatable).")
        parser.add_argument("--collect", action="store_true",
                            help="Also confirm answers our server stored for assignments not seen yet.")

    def handle(self, *args, stage=None, collect=False, **options):
        ids = stage or list(selectors.stages_to_sync().values_list("pk", flat=True))
        try:
            if collect:
                self.stdout.write(f"answers noted: {services.answers_collect()}")
            for pk in ids:
                report = services.stage_sync(stage_id=pk)
                self.stdout.write(f"stage {pk}: " + ", ".join(f"{k} {v}" for k, v in vars(report).items()))
        except ProviderError as exc:
            raise CommandError(str(exc)) from exc
