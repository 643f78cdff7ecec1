"""The tools' pure ES modules (geometry, store and undo, host adapter) under Node's test runner."""
import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).resolve().parent / "js"


def test_pure_modules_pass_node_test_runner():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to run the tools' pure JavaScript tests")
    result = subprocess.run([node, "--test", str(JS_TESTS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
