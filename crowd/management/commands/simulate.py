"""``manage.py simulate``: a simulated crowd takes procedural scenes through the whole pipeline on
the real stack, and the result is measured against the truth (see crowd/simulation/run.py).

    python manage.py simulate                          # fixed and adaptive side by side, own stack
    python manage.py simulate --mode adaptive --images 12
    python manage.py simulate --url http://127.0.0.1:8000   # against a running `make run`

The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import json
from contextlib import nullcontext

from django.core.management.base import BaseCommand, CommandError

from crowd.simulation.run import DEFAULT_CROWD, simulation_report, simulation_run, simulation_setup

ROWS = [
    ("category precision", lambda r: r["categories"]["precision"]),
    ("category recall", lambda r: r["categories"]["recall"]),
    ("instance counts exact", lambda r: r["instances"]["exact"]),
    ("outline mean IoU", lambda r: r["outlines"]["mean_iou"]),
    ("outlines IoU >= 0.75", lambda r: r["outlines"]["share_iou_75"]),
    ("assignments: categories", lambda r: r["stages"]["categories"]["assignments"]),
    ("assignments: spotting", lambda r: r["stages"]["spotting"]["assignments"]),
    ("assignments: segmentation", lambda r: r["stages"]["segmentation"]["assignments"]),
    ("assignments: verification", lambda r: r["stages"]["verification"]["assignments"]),
    ("assignments: all", lambda r: r["assignments"]),
    ("cost (USD)", lambda r: r["cost"]),
    ("unfinished items", lambda r: r["unfinished"]),
    ("in the review queue", lambda r: r["review_queue"]),
    ("replayed decisions that differ", lambda r: r["recompute"]["changed"]),
    ("seconds", lambda r: r["seconds"]),
]


class Command(BaseCommand):
    help = "Run a simulated crowd through the pipeline on the real stack and measure it against the truth."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="", help="A running platform (loopback); default: start one here.")
        parser.add_argument("--mode", choices=["fixed", "adaptive", "both"], default="both")
        parser.add_argument("--images", type=int, default=24)
        parser.add_argument("--categories", type=int, default=6, help="The first N of COCO's categories.")
        parser.add_argument("--crowd", default=DEFAULT_CROWD, help="Profiles and counts, e.g. careful:6,spammer:1.")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--no-training", action="store_true", help="Let every worker outline, untrained.")
        parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds per run at most.")

    def handle(self, *args, **opts):
        import logging

        from crowd.simulation.stack import LocalStack


        modes = ["fixed", "adaptive"] if opts["mode"] == "both" else [opts["mode"]]
        reports = {}
        with (nullcontext() if opts["url"] else LocalStack()) as stack:
            base = opts["url"] or stack.url
            # A worker who finds nothing left in a group gets a 409, many times a round: not news.
            # (Set after the stack's WSGI setup, which configures logging again.)
            logging.getLogger("django.request").setLevel(logging.ERROR)
            for mode in modes:
                self.stdout.write(f"{mode}: setting up {opts['images']} scenes and {opts['crowd']} at {base}")
                sim = simulation_setup(base_url=base, images=opts["images"], categories=opts["categories"],
                                       crowd=opts["crowd"], adaptive=mode == "adaptive", seed=opts["seed"],
                                       training=not opts["no_training"])
                simulation_run(sim, timeout=opts["timeout"], seed=opts["seed"],
                               alive=stack.check if stack is not None else None,
                               progress=lambda line, mode=mode: self.stdout.write(f"{mode}: {line}"))
                reports[mode] = simulation_report(sim)
        if not reports:
            raise CommandError("nothing ran")
        self.stdout.write(table(reports))
        self.stdout.write(json.dumps(summary(reports), sort_keys=True))


def table(reports: dict) -> str:
    modes = list(reports)
    width = max(len(name) for name, _ in ROWS) + 2
    lines = ["".join([f"{'':{width}}"] + [f"{m:>12}" for m in modes] + (["   ratio"] if len(modes) == 2 else []))]
    for name, get in ROWS:
        values = [get(reports[m]) for m in modes]
        cells = [f"{v:>12.3f}" if isinstance(v, float) else f"{str(v):>12}" for v in values]
        ratio = ""
        if len(values) == 2:
            try:
                ratio = f"{float(values[1]) / float(values[0]):8.2f}" if float(values[0]) else ""
            except (TypeError, ValueError):
                ratio = ""
        lines.append(f"{name:{width}}" + "".join(cells) + ratio)
    return "\n".join(lines)


def summary(reports: dict) -> dict:
    out = {"reports": reports}
    if {"fixed", "adaptive"} <= set(reports):
        f, a = reports["fixed"], reports["adaptive"]
        out["adaptive_vs_fixed"] = {
            "assignments_ratio": round(a["assignments"] / max(f["assignments"], 1), 3),
            "category_assignments_ratio": round(a["stages"]["categories"]["assignments"]
                                                / max(f["stages"]["categories"]["assignments"], 1), 3),
            "precision_delta": round(a["categories"]["precision"] - f["categories"]["precision"], 4),
            "recall_delta": round(a["categories"]["recall"] - f["categories"]["recall"], 4),
        }
    return out
