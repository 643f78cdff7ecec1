"""Runs crowd-kit inside its own virtualenv (benchmarks/.venv-crowdkit), called by aggregation.py.

Reads a JSON job on stdin: {"sets": {name: votes_csv}, "methods": [...], "synthetic": npz or null,
"synthetic_methods": [...]}. Prints one JSON object on its last line: labels per task and seconds
per (set, method). Imports nothing from the project.
"""
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def main():
    job = json.load(sys.stdin)
    import numpy as np
    import pandas as pd
    import crowdkit
    from crowdkit.aggregation import GLAD, MACE, DawidSkene, MajorityVote, Wawa

    makers = {
        "MajorityVote": MajorityVote,
        "Wawa": Wawa,
        "DawidSkene": lambda: DawidSkene(n_iter=100),
        "GLAD": GLAD,
        "MACE": MACE,
    }
    out = {"crowdkit_version": crowdkit.__version__ if hasattr(crowdkit, "__version__") else None,
           "pandas": pd.__version__, "sets": {}, "synthetic": {}}
    try:
        import importlib.metadata as md
        out["crowdkit_version"] = md.version("crowd-kit")
        out["scikit_learn"] = md.version("scikit-learn")
    except Exception:
        pass
    for name, path in job["sets"].items():
        df = pd.read_csv(path, dtype=str)[["task", "worker", "label"]]
        res = {}
        for method in job["methods"]:
            # best of 3 for the fast methods, as for ours; GLAD and MACE (seconds to minutes) once
            repeat = 1 if method in ("GLAD", "MACE") else job.get("repeat", 3)
            best = float("inf")
            try:
                for _ in range(repeat):
                    model = makers[method]()
                    started = time.perf_counter()
                    labels = model.fit_predict(df)
                    best = min(best, time.perf_counter() - started)
            except Exception as exc:  # report, do not stop the run
                res[method] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            res[method] = {"seconds": best, "labels": {str(k): str(v) for k, v in labels.items()}}
            if hasattr(model, "loss_history_"):
                res[method]["n_iter"] = len(model.loss_history_)
            print(f"crowd-kit {method} on {name}: {best:.2f} s", file=sys.stderr, flush=True)
        out["sets"][name] = res
    if job.get("synthetic"):
        data = np.load(job["synthetic"])
        df = pd.DataFrame({"task": data["items"], "worker": data["workers"], "label": data["labels"]})
        truth = data["truth"]
        for method in job["synthetic_methods"]:
            model = makers[method]()
            started = time.perf_counter()
            labels = model.fit_predict(df)
            seconds = time.perf_counter() - started
            pred = labels.reindex(np.arange(len(truth))).to_numpy()
            out["synthetic"][method] = {"seconds": seconds, "accuracy": float(np.mean(pred == truth))}
            if hasattr(model, "loss_history_"):
                out["synthetic"][method]["n_iter"] = len(model.loss_history_)
            print(f"crowd-kit {method} on synthetic: {seconds:.2f} s", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
