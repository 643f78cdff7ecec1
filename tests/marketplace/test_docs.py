"""docs/marketplace.md's third-party script runs, as written, against a live marketplace."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.django_db(transaction=True)
DOC = Path(__file__).resolve().parents[2] / "docs" / "marketplace.md"
MAKE_RUN_ENDPOINT = "http://127.0.0.1:8000/mturk-api/"


def doc_script() -> str:
    blocks = re.findall(r"```python marketplace-example\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/marketplace.md must hold exactly one marketplace-example block"
    return blocks[0]


def test_the_documented_script_runs_against_a_live_server(market, tmp_path):
    req = market.requester("admin", balance="100")
    script = doc_script()
    assert MAKE_RUN_ENDPOINT in script, "the doc's script must target make run's address"
    path = tmp_path / "example.py"
    path.write_text(script.replace(MAKE_RUN_ENDPOINT, market.endpoint))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": req.access_key_id, "AWS_SECRET_ACCESS_KEY": req.secret,
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    done = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("created ") == 3
    assert "as expected: Hit 3NOSUCHHIT0000000000000000000 does not exist." in done.stdout
    assert "AWS.MechanicalTurk.HitDoesNotExist" in done.stdout
    # Every HIT was expired and deleted: nothing stays on hold, the whole balance is back.
    assert "'AvailableBalance': '100.00', 'OnHoldBalance': '0.00'" in done.stdout
    mturk = req.client()
    assert mturk.list_hits()["NumResults"] == 0
