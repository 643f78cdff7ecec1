"""``manage.py aggregate_votes``: CSV in, CSV out, accuracy with --truth."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from tests.crowd.aggregation_data import one_coin, real_set, synthetic_crowd


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("aggregate_votes", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def adversarial_csv(tmp_path):
    items, workers, labels, truth = synthetic_crowd(one_coin([0.75, 0.75, 0.75, 0.1, 0.1]), 400, seed=8)
    names = np.array(["no", "yes"])
    votes = tmp_path / "votes.csv"
    with open(votes, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "worker", "label"])
        w.writerows(zip((f"img{i}" for i in items), (f"w{k}" for k in workers), names[labels]))
    truth_csv = tmp_path / "truth.csv"
    with open(truth_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "label"])
        w.writerows((f"img{i}", names[t]) for i, t in enumerate(truth))
    return votes, truth_csv


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def accuracy_of(text):
    line = [ln for ln in text.splitlines() if ln.startswith("accuracy:")]
    assert line, text
    return float(line[0].split()[1])


def test_writes_task_label_confidence(adversarial_csv, tmp_path):
    votes, truth = adversarial_csv
    out_csv = tmp_path / "labels.csv"
    out, _ = run(str(votes), "--method", "ds", "--out", str(out_csv), "--truth", str(truth))
    rows = read_rows(out_csv)
    assert len(rows) == 400 and set(rows[0]) == {"task", "label", "confidence"}
    assert {r["label"] for r in rows} == {"no", "yes"}
    assert all(0.5 <= float(r["confidence"]) <= 1 for r in rows)
    ds = accuracy_of(out)
    mv = accuracy_of(run(str(votes), "--method", "majority", "--out", str(out_csv), "--truth", str(truth))[0])
    assert ds > mv + 0.1
    assert f"({round(ds * 400)} of 400 scored tasks right)" in out


@pytest.mark.parametrize("method", ["majority", "wawa", "one_coin", "ds"])
def test_every_method_runs_and_prints_to_stdout_without_out(adversarial_csv, method):
    votes, _ = adversarial_csv
    out, err = run(str(votes), "--method", method)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 400
    assert f"{method}: 2000 votes, 400 tasks, 5 workers, 2 classes" in err


def test_real_rte_set_with_truth(tmp_path):
    folder = real_set("rte")
    out, _ = run(str(folder / "votes.csv"), "--method", "ds", "--out", str(tmp_path / "l.csv"),
                 "--truth", str(folder / "truth.csv"))
    assert accuracy_of(out) >= 0.922
    out, _ = run(str(folder / "votes.csv"), "--method", "majority", "--tie", "prior", "--out",
                 str(tmp_path / "l.csv"), "--truth", str(folder / "truth.csv"))
    assert accuracy_of(out) == pytest.approx(0.875)


def test_clear_errors(tmp_path, adversarial_csv):
    votes, _ = adversarial_csv
    with pytest.raises(CommandError, match="no such file"):
        run(str(tmp_path / "missing.csv"))
    empty = tmp_path / "empty.csv"
    empty.write_text("task,worker,label\n")
    with pytest.raises(CommandError, match="no votes"):
        run(str(empty))
    with pytest.raises(CommandError, match="unknown label"):
        run(str(votes), "--classes", "no,maybe")
    with pytest.raises(CommandError, match="--tie applies"):
        run(str(votes), "--method", "ds", "--tie", "first")
    with pytest.raises(CommandError):
        run(str(votes), "--method", "median")
    other = tmp_path / "other_truth.csv"
    other.write_text("task,label\nnot-a-task,yes\n")
    with pytest.raises(CommandError, match="nothing to score"):
        run(str(votes), "--truth", str(other))
