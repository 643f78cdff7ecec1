"""``manage.py aggregate_votes VOTES.csv --method ds --out LABELS.csv [--truth TRUTH.csv]``

Reads ``task,worker,label`` rows, aggregates them with one of :data:`crowd.aggregation.METHODS`,
and writes ``task,label,confidence`` (to stdout without ``--out``). With ``--truth`` (a
``task,label`` CSV) it also prints the accuracy on the tasks present in both files. Touches no
database: the files in, the files out.
"""
from __future__ import annotations

import time

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from crowd.aggregation import METHODS, aggregate, read_truth, read_votes, write_labels


class Command(BaseCommand):
    help = "Aggregate crowd votes (task,worker,label CSV) into one label per task with a confidence."

    def add_arguments(self, parser):
        parser.add_argument("votes", help="CSV with a header task,worker,label (one row per vote)")
        parser.add_argument("--method", default="ds", choices=sorted(METHODS), help="aggregation method (default: ds)")
        parser.add_argument("--out", help="where to write task,label,confidence (default: stdout)")
        parser.add_argument("--truth", help="CSV task,label of true labels: print the accuracy")
        parser.add_argument("--classes", help="comma-separated label set, in tie-break order (default: labels seen, sorted)")
        parser.add_argument("--tie", choices=["first", "prior", "random"], default=None,
                            help="tie rule for majority and wawa (default: first = lowest class)")
        parser.add_argument("--max-iter", type=int, default=None, help="EM iteration cap for ds and one_coin")

    def handle(self, *args, **opts):
        classes = [c.strip() for c in opts["classes"].split(",")] if opts["classes"] else None
        try:
            votes = read_votes(opts["votes"], classes=classes)
        except FileNotFoundError:
            raise CommandError(f"no such file: {opts['votes']}")
        except ValueError as exc:
            raise CommandError(str(exc))
        kwargs = {}
        if opts["tie"]:
            if opts["method"] not in ("majority", "wawa"):
                raise CommandError("--tie applies to --method majority or wawa")
            kwargs["tie"] = opts["tie"]
        if opts["max_iter"] is not None:
            if opts["method"] not in ("ds", "one_coin"):
                raise CommandError("--max-iter applies to --method ds or one_coin")
            kwargs["max_iter"] = opts["max_iter"]
        started = time.perf_counter()
        result = aggregate(opts["method"], votes.items, votes.workers, votes.labels,
                           n_items=votes.n_items, n_workers=votes.n_workers, n_classes=votes.n_classes, **kwargs)
        seconds = time.perf_counter() - started
        write_labels(opts["out"] or self.stdout, votes.item_names, votes.label_names, result.labels, result.confidence)
        log = self.stderr if not opts["out"] else self.stdout
        extra = f", {result.n_iter} EM iterations" if result.n_iter else ""
        log.write(f"{opts['method']}: {len(votes)} votes, {votes.n_items} tasks, {votes.n_workers} workers, "
                  f"{votes.n_classes} classes, {seconds:.3f} s{extra}")
        if opts["out"]:
            log.write(f"wrote {opts['out']}")
        if opts["truth"]:
            try:
                truth = read_truth(opts["truth"])
            except FileNotFoundError:
                raise CommandError(f"no such file: {opts['truth']}")
            except ValueError as exc:
                raise CommandError(str(exc))
            names = np.array(list(truth), dtype=str)
            idx = votes.item_index(names)
            scored = idx >= 0
            if not scored.any():
                raise CommandError("no task of the truth file has votes: nothing to score")
            true_labels = votes.label_index([truth[n] for n in names[scored]])
            correct = result.labels[idx[scored]] == true_labels
            log.write(f"accuracy: {correct.mean():.4f} ({int(correct.sum())} of {int(scored.sum())} scored tasks right"
                      f"{', ' + str(int((~scored).sum())) + ' truth tasks without votes' if (~scored).any() else ''})")
