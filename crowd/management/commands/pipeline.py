"""A project's pipeline from the shell: configure, launch, catch up, status and recompute.

    manage.py pipeline 3 configure --preset coco --adaptive
    manage.py pipeline 3 launch              # make the entry items and put them up, in this process
    manage.py pipeline 3 launch --queue      # or queue crowd.pipeline_launch for a worker
    manage.py pipeline 3 catch-up            # what beat's crowd.pipeline_catch_up does, for this project
    manage.py pipeline 3 status              # the progress table of the admin's pipeline page
    manage.py pipeline 3 recompute           # replay every decision; exit code 1 if any differs
"""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from crowd import selectors
from crowd.pipeline import engine
from crowd.pipeline.chain import PRESETS, chain_of, pipeline_configure
from crowd.providers.base import ProviderError
from datasets.models import Project

COLUMNS = [("stage", "stage"), ("waiting", "waiting"), ("in_progress", "in progress"), ("done", "done"),
           ("rejected_back", "rejected back"), ("review", "in review"), ("answers_per_item", "answers/item"),
           ("assignments", "assignments"), ("spent", "spent $"), ("projected", "to finish $ (est.)")]


class Command(BaseCommand):
    help = "Configure, launch, catch up, show or recompute a project's crowd pipeline."

    def add_arguments(self, parser):
        parser.add_argument("project", type=int, help="The project id.")
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        configure = sub.add_parser("configure", help="Make (or update) the stages from a preset.")
        configure.add_argument("--preset", choices=list(PRESETS), default="coco")
        configure.add_argument("--adaptive", action="store_true",
                               help="Adaptive redundancy (the stage's numbers as caps).")
        launch = sub.add_parser("launch", help="Make the entry stage's items and put them up as HITs.")
        launch.add_argument("--queue", action="store_true",
                            help="Queue crowd.pipeline_launch instead of running it here.")
        sub.add_parser("catch-up", help="Decide what the stored answers allow and publish what waits.")
        sub.add_parser("status", help="Items per stage and state, assignments, money, the estimate to finish.")
        sub.add_parser("recompute", help="Replay every decided item from its stored answers; list differences.")

    def handle(self, *args, project: int, action: str, **options):
        target = Project.objects.filter(pk=project).first()
        if target is None:
            raise CommandError(f"No project with id {project}.")
        try:
            getattr(self, "do_" + action.replace("-", "_"))(target, **options)
        except ProviderError as exc:
            raise CommandError(str(exc)) from exc

    def do_configure(self, project: Project, *, preset: str, adaptive: bool, **_):
        stages = pipeline_configure(project=project, preset=preset, adaptive=adaptive)
        for stage in stages:
            mode = (f"adaptive (at least {stage.min_answers}, {stage.confidence:.0%} sure, cap {stage.max_assignments})"
                    if stage.adaptive else f"fixed {stage.max_assignments}")
            self.stdout.write(f"{stage.pk:>5}  {stage.name:<20} {stage.kind:<13} {mode}, ${stage.reward} a task"
                              + (f" -> {stage.feeds.name}" if stage.feeds else ""))

    def do_launch(self, project: Project, *, queue: bool, **_):
        if not chain_of(project.pk):
            raise CommandError("This project has no pipeline stages: run `pipeline ID configure` first.")
        if queue:
            from crowd import tasks

            with transaction.atomic():
                tasks.pipeline_launch.delay_on_commit(project.pk)
            self.stdout.write("queued crowd.pipeline_launch")
            return
        out = engine.pipeline_launch(project_id=project.pk)
        self.stdout.write(f"stage {out['stage']}: {out['added']} items added, {out['planned']} HITs planned, "
                          f"{out['published']} published, {out['waiting']} items waiting")

    def do_catch_up(self, project: Project, **_):
        out = engine.pipeline_catch_up(project_id=project.pk)
        self.stdout.write(f"{out['finished']} items moved on, {out['published']} HITs published")

    def do_status(self, project: Project, **_):
        if not chain_of(project.pk):
            self.stdout.write(f"{project.name}: no pipeline yet "
                              f"(manage.py pipeline {project.pk} configure --preset coco)")
            return
        rows, m = selectors.pipeline_overview(project)
        table = [[label for _, label in COLUMNS]]
        for row in rows:
            cells = dict(row, stage=row["stage"].name)
            cells["answers_per_item"] = f"{row['answers_per_item']:.2f}" if row["answers_per_item"] is not None else "-"
            cells["projected"] = "-" if not row["left"] else ("?" if row["projected"] is None else row["projected"])
            table.append([str(cells[key]) for key, _ in COLUMNS])
        widths = [max(len(r[k]) for r in table) for k in range(len(COLUMNS))]
        self.stdout.write(f"{project.name} (project {project.pk})")
        for n, r in enumerate(table):
            self.stdout.write("  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                                        for k, (c, w) in enumerate(zip(r, widths))))
            if n == 0:
                self.stdout.write("  ".join("-" * w for w in widths))
        self.stdout.write(f"spent ${m['spent']} of ${m['budget']} budget; ${m['reserved']} reserved; "
                          f"{m['assignments']} assignments")
        self.stdout.write(f"estimate to finish the items made so far: ${m['projected']}"
                          + ("" if m["projected_complete"] else " (stages with nothing paid yet left out)"))

    def do_recompute(self, project: Project, **_):
        report = engine.pipeline_recompute(project_id=project.pk)
        self.stdout.write(f"{report.items} items replayed, {report.same} the same, {len(report.changed)} different")
        for change in report.changed:
            self.stdout.write(f"item {change['item']} ({change['stage']}): stored {json.dumps(change['stored'])}, "
                              f"recomputed {json.dumps(change['recomputed'])}")
        if report.changed:
            raise CommandError(f"{len(report.changed)} item(s) differ from the stored decisions.", returncode=1)
