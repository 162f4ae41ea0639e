"""The in-process engine with ESamp on, on the tiny random model (in a child process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server  # every test here talks to a real server


@pytest.fixture(scope="module")
def probe(tiny_model):
    script = Path(__file__).with_name("engine_probe.py")
    run = subprocess.run([sys.executable, str(script), str(tiny_model)], capture_output=True, text=True, timeout=600, env=os.environ)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_plain_request(probe):
    assert probe["plain"]["completion_tokens"] == 5 and "esamp" not in probe["plain"]


def test_explore_in_process(probe):
    metas = probe["explore"]
    assert [m["group"] for m in metas] == ["local", "local"] and metas[0]["slot"] == metas[1]["slot"]
    assert all(m["steps"] >= 4 and m["explore"] == 0.5 for m in metas)


def test_bad_explore_raises_a_clear_error(probe):
    assert all(e is not None and "explore must be" in e for e in probe["errors"]), probe["errors"]
    assert probe["after"] == 2
