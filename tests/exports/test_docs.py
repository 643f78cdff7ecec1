"""The training loop documented in docs/exports.md, extracted and run on a real export with the
shipped loader file and without Django."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "exports.md"

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def documented_loop() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- tested: training-loop -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/exports.md lost its tested training loop"
    return match.group(1)


def test_the_documented_training_loop_runs_on_an_export(export_dir, tmp_path):
    code = documented_loop()
    runner = (
        "import importlib.abc, sys\n"
        "class NoDjango(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'django' or name.startswith('django.'):\n"
        "            raise ImportError('no django for researchers')\n"
        "sys.meta_path.insert(0, NoDjango())\n"
        f"sys.path.insert(0, {str(export_dir)!r})\n"
    )
    script = tmp_path / "train.py"
    script.write_text(runner + code)
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    env["EXPORT_DIR"] = str(export_dir)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"epoch 1: \d+ batches, loss \d+\.\d+", done.stdout), done.stdout
    assert (tmp_path / "checkpoint.pt").exists()
