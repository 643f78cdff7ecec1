"""Vote aggregation: ours beside crowd-kit's, on the real MTurk sets and on one million votes.

    .venv/bin/python benchmarks/aggregation.py                  # everything (a few minutes)
    .venv/bin/python benchmarks/aggregation.py --no-crowdkit    # ours only
    .venv/bin/python benchmarks/aggregation.py --quick          # crowd-kit without GLAD/MACE

1. The four sets in ../shared/data/crowd-votes (bluebirds, rte, temp, adult): accuracy against
   truth.csv (tasks in both files) and seconds, for our majority, wawa, one_coin, ds and the
   textbook maximum-likelihood ds (``prior_correct=0``), and for crowd-kit's MajorityVote, Wawa,
   DawidSkene, GLAD and MACE. Our seconds are turning the task/worker/label strings into indices
   and then aggregating, timed as one run; crowd-kit's are its ``fit_predict`` on a DataFrame
   already read. Both exclude reading the file. Best of ``--repeat`` runs (3) for both, except
   crowd-kit's GLAD and MACE (once). ``encode_seconds`` and ``aggregate_seconds`` give the parts.
2. One million synthetic votes: 100,000 items x 10 votes, 3 classes, 2,000 workers with random
   confusion matrices: our ds and crowd-kit's DawidSkene and MajorityVote, seconds and accuracy.

Everything runs on one core: OMP/MKL/OPENBLAS_NUM_THREADS=1 are set before NumPy loads, here and in
crowd-kit's process. crowd-kit lives in its own virtualenv, benchmarks/.venv-crowdkit, made on the
first run from benchmarks/requirements-crowdkit.txt (it must never enter requirements.txt); it runs
in a subprocess (crowdkit_runner.py) that answers in JSON. If it cannot be installed the run says
so and still reports ours. A table goes to stdout; the LAST line is one JSON object with the figures.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crowd.aggregation import aggregate, encode, read_truth  # noqa: E402
from crowd.aggregation.io import _read_columns  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "crowd-votes"
SETS = ("bluebirds", "rte", "temp", "adult")
CK_VENV = ROOT / "benchmarks" / ".venv-crowdkit"
CK_REQUIREMENTS = ROOT / "benchmarks" / "requirements-crowdkit.txt"
CK_RUNNER = ROOT / "benchmarks" / "crowdkit_runner.py"
OURS = {  # name -> (method, kwargs)
    "majority": ("majority", {}),
    "wawa": ("wawa", {}),
    "one_coin": ("one_coin", {}),
    "ds": ("ds", {}),
    "ds_mle": ("ds", {"prior_correct": 0.0}),
}
CK_METHODS = ["MajorityVote", "Wawa", "DawidSkene", "GLAD", "MACE"]


def timed(fn, repeat):
    """Best of ``repeat`` runs (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def score(pred_by_task: dict, truth: dict) -> tuple[float, int]:
    common = [t for t in truth if t in pred_by_task]
    right = sum(pred_by_task[t] == truth[t] for t in common)
    return right / len(common), len(common)


_VOTES: dict = {}


def run_ours(name: str, repeat: int) -> dict:
    folder = DATA / name
    tasks, workers, labels = _read_columns(folder / "votes.csv", ("task", "worker", "label"))
    truth = read_truth(folder / "truth.csv")
    enc_s, votes = timed(lambda: encode(tasks, workers, labels), repeat)
    _VOTES[name] = (votes, truth, enc_s, (tasks, workers, labels))
    out = {"votes": len(votes), "tasks": votes.n_items, "workers": votes.n_workers,
           "classes": votes.n_classes, "encode_seconds": enc_s, "methods": {}}
    for key, (method, kwargs) in OURS.items():
        secs, res = timed(lambda: aggregate(method, votes.items, votes.workers, votes.labels, **kwargs), repeat)
        total, _ = timed(lambda: encoded_and_aggregated(tasks, workers, labels, method, kwargs), repeat)
        pred = dict(zip(votes.item_names.tolist(), votes.label_names[res.labels].tolist()))
        acc, n = score(pred, truth)
        out["methods"][key] = {"accuracy": acc, "seconds": total, "aggregate_seconds": secs,
                               "n_iter": res.n_iter}
        out["scored"] = n
    return out


def encoded_and_aggregated(tasks, workers, labels, method, kwargs):
    """What "seconds" times for ours: the strings to indices, then the method, in one run (the best
    of ``--repeat`` whole runs, as for crowd-kit, not the sum of the best of each part)."""
    votes = encode(tasks, workers, labels)
    return aggregate(method, votes.items, votes.workers, votes.labels, **kwargs)


def synthetic(n_items=100_000, per_item=10, n_workers=2_000, K=3, seed=42):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, K, n_items)
    diag = rng.uniform(0.55, 0.95, (n_workers, K))
    off = rng.dirichlet(np.ones(K - 1), (n_workers, K)) * (1 - diag)[..., None]
    conf = np.zeros((n_workers, K, K))
    for k in range(K):
        others = [c for c in range(K) if c != k]
        conf[:, k, k] = diag[:, k]
        conf[:, k, others] = off[:, k]
    items = np.repeat(np.arange(n_items), per_item)
    workers = rng.integers(0, n_workers, len(items))
    cdf = np.cumsum(conf[workers, truth[items]], axis=1)
    labels = np.minimum((rng.random(len(items))[:, None] > cdf).sum(axis=1), K - 1)
    return items, workers, labels, truth


def same_iterations(name: str, n_iter: int, repeat: int) -> dict:
    """Our ds stopped after exactly crowd-kit's number of EM iterations: the same work, to compare
    speed where crowd-kit stops early."""
    votes, truth, enc_s, strings = _VOTES[name]
    kwargs = {"max_iter": n_iter, "tol": -np.inf}
    secs, res = timed(lambda: aggregate("ds", votes.items, votes.workers, votes.labels, **kwargs), repeat)
    total, _ = timed(lambda: encoded_and_aggregated(*strings, "ds", kwargs), repeat)
    pred = dict(zip(votes.item_names.tolist(), votes.label_names[res.labels].tolist()))
    return {"accuracy": score(pred, truth)[0], "seconds": total, "aggregate_seconds": secs, "n_iter": res.n_iter}


def ensure_crowdkit_venv() -> tuple[Path | None, str]:
    python = CK_VENV / "bin" / "python"
    probe = [str(python), "-c", "import crowdkit.aggregation"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python, "existing"
    print(f"setting up crowd-kit in {CK_VENV} (once) ...", file=sys.stderr, flush=True)
    base = getattr(sys, "_base_executable", None) or "python3"
    steps = [[base, "-m", "venv", str(CK_VENV)],
             [str(python), "-m", "pip", "install", "-q", "-r", str(CK_REQUIREMENTS)]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return None, f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-500:]}"
    if subprocess.run(probe, capture_output=True).returncode != 0:
        return None, "crowd-kit installed but does not import"
    return python, "installed"


def run_crowdkit(python: Path, methods, synthetic_npz: str | None, repeat: int) -> dict:
    job = {"sets": {s: str(DATA / s / "votes.csv") for s in SETS}, "methods": methods, "repeat": repeat,
           "synthetic": synthetic_npz, "synthetic_methods": ["MajorityVote", "DawidSkene"]}
    proc = subprocess.run([str(python), str(CK_RUNNER)], input=json.dumps(job), text=True,
                          stdout=subprocess.PIPE, stderr=None, env={**os.environ})
    if proc.returncode != 0:
        raise RuntimeError(f"crowd-kit runner exited with {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-crowdkit", action="store_true", help="skip crowd-kit")
    parser.add_argument("--quick", action="store_true", help="crowd-kit without GLAD and MACE")
    parser.add_argument("--repeat", type=int, default=3, help="our runs per figure, best kept (default 3)")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"missing {DATA}: the shared crowd votes must sit beside the clone", file=sys.stderr)
        return 2

    report = {"benchmark": "aggregation", "python": platform.python_version(), "numpy": np.__version__,
              "threads": 1, "sets": {}, "synthetic": {}, "crowdkit": {"status": "skipped"}}
    for name in SETS:
        report["sets"][name] = {"ours": run_ours(name, args.repeat)}

    items, workers, labels, truth = synthetic()
    report["synthetic"] = {"votes": len(items), "items": len(truth), "workers": int(workers.max()) + 1, "classes": 3,
                           "ours": {}}
    for key in ("majority", "ds"):
        method, kwargs = OURS[key]
        secs, res = timed(lambda: aggregate(method, items, workers, labels, **kwargs), args.repeat)
        report["synthetic"]["ours"][key] = {"seconds": secs, "accuracy": float(np.mean(res.labels == truth)),
                                            "n_iter": res.n_iter}

    if not args.no_crowdkit:
        python, status = ensure_crowdkit_venv()
        if python is None:
            report["crowdkit"] = {"status": "unavailable", "reason": status}
        else:
            methods = [m for m in CK_METHODS if not (args.quick and m in ("GLAD", "MACE"))]
            with tempfile.TemporaryDirectory() as tmp:
                npz = os.path.join(tmp, "synthetic.npz")
                np.savez(npz, items=items, workers=workers, labels=labels, truth=truth)
                try:
                    ck = run_crowdkit(python, methods, npz, args.repeat)
                except Exception as exc:
                    ck = None
                    report["crowdkit"] = {"status": "failed", "reason": str(exc)}
            if ck is not None:
                report["crowdkit"] = {"status": "ran", "version": ck.get("crowdkit_version"),
                                      "pandas": ck.get("pandas"), "scikit_learn": ck.get("scikit_learn")}
                for name in SETS:
                    truth_map = read_truth(DATA / name / "truth.csv")
                    figures = {}
                    for method, r in ck["sets"][name].items():
                        if "error" in r:
                            figures[method] = {"error": r["error"]}
                        else:
                            figures[method] = {"accuracy": score(r["labels"], truth_map)[0], "seconds": r["seconds"]}
                            if "n_iter" in r:
                                figures[method]["n_iter"] = r["n_iter"]
                    report["sets"][name]["crowdkit"] = figures
                    n_ck = figures.get("DawidSkene", {}).get("n_iter")
                    if n_ck:
                        report["sets"][name]["ours"]["methods"]["ds_same_iterations"] = same_iterations(
                            name, n_ck, args.repeat)
                report["synthetic"]["crowdkit"] = ck["synthetic"]
                n_ck = ck["synthetic"].get("DawidSkene", {}).get("n_iter")
                if n_ck:
                    secs, res = timed(lambda: aggregate("ds", items, workers, labels, max_iter=n_ck, tol=-np.inf),
                                      args.repeat)
                    report["synthetic"]["ours"]["ds_same_iterations"] = {
                        "seconds": secs, "accuracy": float(np.mean(res.labels == truth)), "n_iter": res.n_iter}

    summarise(report)
    print_table(report)
    print(json.dumps(report, sort_keys=True))
    return 0


def summarise(report: dict) -> None:
    """Our DS against crowd-kit's DawidSkene: accuracy gap (points) and speed-up, per set."""
    goals = {}
    for name, figures in report["sets"].items():
        ours = figures["ours"]["methods"]["ds"]
        ck = figures.get("crowdkit", {}).get("DawidSkene")
        if ck and "accuracy" in ck:
            goals[name] = {"ds_accuracy_gap_points": round(100 * (ours["accuracy"] - ck["accuracy"]), 2),
                           "ds_speedup": ck["seconds"] / ours["seconds"]}
            same = figures["ours"]["methods"].get("ds_same_iterations")
            if same:
                goals[name]["ds_speedup_same_iterations"] = ck["seconds"] / same["seconds"]
    ck = report["synthetic"].get("crowdkit", {}).get("DawidSkene")
    ours = report["synthetic"]["ours"]["ds"]
    if ck:
        goals["synthetic_1m"] = {"ds_accuracy_gap_points": round(100 * (ours["accuracy"] - ck["accuracy"]), 2),
                                 "ds_speedup": ck["seconds"] / ours["seconds"]}
        same = report["synthetic"]["ours"].get("ds_same_iterations")
        if same:
            goals["synthetic_1m"]["ds_speedup_same_iterations"] = ck["seconds"] / same["seconds"]
    report["goals"] = {
        "per_set": goals,
        "ds_within_half_point_everywhere": all(g["ds_accuracy_gap_points"] >= -0.5 for g in goals.values()) if goals else None,
        "ds_at_least_5x_faster_everywhere": all(g["ds_speedup"] >= 5 for g in goals.values()) if goals else None,
        "synthetic_ds_under_10s": ours["seconds"] < 10,
    }


def print_table(report: dict) -> None:
    print(f"\nAggregation benchmark, one thread (Python {report['python']}, NumPy {report['numpy']})")
    ck_status = report["crowdkit"]
    if ck_status["status"] == "ran":
        print(f"crowd-kit {ck_status['version']} (pandas {ck_status['pandas']}, scikit-learn {ck_status['scikit_learn']}) "
              f"in {CK_VENV.relative_to(ROOT)}")
    else:
        print(f"crowd-kit: {ck_status['status'].upper()} -- {ck_status.get('reason', 'not asked for (--no-crowdkit)')}")
    print(f"\n{'set':<10} {'method':<22} {'accuracy':>8} {'seconds':>9} {'EM iter':>7}")
    for name, figures in report["sets"].items():
        o = figures["ours"]
        print(f"{name} ({o['votes']} votes, {o['tasks']} tasks, {o['workers']} workers, {o['classes']} classes, "
              f"{o['scored']} scored; encoding the strings {o['encode_seconds']:.4f} s)")
        for key, r in o["methods"].items():
            print(f"{'':<10} {'ours ' + key:<22} {r['accuracy']:>8.4f} {r['seconds']:>9.4f} {r['n_iter'] or '':>7}"
                  f"   (aggregating {r['aggregate_seconds']:.4f})")
        for method, r in figures.get("crowdkit", {}).items():
            if "error" in r:
                print(f"{'':<10} {'crowd-kit ' + method:<22} {'error':>8} {r['error'][:60]}")
            else:
                print(f"{'':<10} {'crowd-kit ' + method:<22} {r['accuracy']:>8.4f} {r['seconds']:>9.4f} {r.get('n_iter', ''):>7}")
    s = report["synthetic"]
    print(f"synthetic ({s['votes']:,} votes, {s['items']:,} items, {s['workers']} workers, {s['classes']} classes)")
    for key, r in s["ours"].items():
        print(f"{'':<10} {'ours ' + key:<22} {r['accuracy']:>8.4f} {r['seconds']:>9.3f} {r['n_iter'] or '':>7}")
    for method, r in s.get("crowdkit", {}).items():
        print(f"{'':<10} {'crowd-kit ' + method:<22} {r['accuracy']:>8.4f} {r['seconds']:>9.3f} {r.get('n_iter', ''):>7}")
    goals = report["goals"]
    if goals["per_set"]:
        print("\nours ds vs crowd-kit DawidSkene: " + ", ".join(
            f"{k} {g['ds_accuracy_gap_points']:+.2f} pts, x{g['ds_speedup']:.1f} faster"
            + (f" (x{g['ds_speedup_same_iterations']:.1f} for the same EM iterations)"
               if "ds_speedup_same_iterations" in g else "")
            for k, g in goals["per_set"].items()))
    print(f"within 0.5 points everywhere: {goals['ds_within_half_point_everywhere']}; "
          f"at least 5x faster everywhere: {goals['ds_at_least_5x_faster_everywhere']}; "
          f"1M votes under 10 s: {goals['synthetic_ds_under_10s']}\n")


if __name__ == "__main__":
    sys.exit(main())
