"""COCO's fixed redundancy against adaptive redundancy, side by side, on one simulated crowd.

Runs ``manage.py simulate --mode both`` on its own loopback stack (Django's threaded server in
this process, a real Celery worker process, the marketplace through boto3, simulated workers over
HTTP) in a fresh data folder, so it touches nothing of yours:

    .venv/bin/python benchmarks/simulate.py --images 24

Prints the per-stage table (fixed, adaptive, ratio) and, as its last line, one JSON object.
Goal (issue #6): adaptive at most half the assignments with category precision and recall at
least those of COCO's 8-worker "any worker" rule.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--categories", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crowd", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="annotator-simulate-") as var:
        env = dict(os.environ, ANNOTATOR_VAR_DIR=var, DEBUG="true")
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run(manage + ["migrate", "-v0"], cwd=ROOT, env=env, check=True)
        cmd = manage + ["simulate", "--mode", "both", "--images", str(args.images), "--categories",
                        str(args.categories), "--seed", str(args.seed)]
        if args.crowd:
            cmd += ["--crowd", args.crowd]
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
