"""``sglang-esamp bench`` in a tiny mode against the real CPU server, and the GPU overhead
script in its CPU smoke mode."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..evaluation.test_commands import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.server
def test_bench_json_reports_training_and_ratio(tiny_esamp_server):
    proc = cli("bench", "--prompts", "2", "--n", "2", "--max-new-tokens", "4", "--repeats", "1", "--json", "--url", tiny_esamp_server.url)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    cases = result["cases"]
    assert list(cases) == ["vanilla", "esamp explore=0", "esamp explore=0.5", "esamp explore=0.5 independent"]
    assert all(c["tok_s"] > 0 for c in cases.values())
    assert all(cases[k]["steps_trained"] > 0 and not cases[k]["void"] for k in list(cases)[1:])
    assert cases["esamp explore=0.5 independent"]["tilted_rows"]["plausible"] > 0
    # the bench samples without filters: every tilted row-step took the dense form
    assert cases["esamp explore=0.5"]["tilted_rows"]["plausible"] > 0 and cases["esamp explore=0.5"]["tilted_rows"]["candidates"] == 0
    assert sum(cases["esamp explore=0"]["tilted_rows"].values()) == 0
    assert abs(result["ratio"] - cases["esamp explore=0.5"]["tok_s"] / cases["vanilla"]["tok_s"]) < 1e-9


def test_gpu_overhead_script_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, "-m", "sglang_esamp.tools.gpu_overhead", "--tiny", "--shapes", "2x4", "--steps", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["trainer_thread_vs_inline_max_abs_diff"] == 0.0
    assert [c["distiller"] for c in result["cases"]] == ["tail", "mlp"]
    for c in result["cases"]:
        assert c["steps_trained"] > 0 and c["decode_step_s"] > 0
        assert abs(c["overhead"] - (c["esamp_step_s"] / c["decode_step_s"] - 1)) < 1e-9
        assert set(c["pieces_s"]) == {"predict", "tilt_dense", "tilt_dense_residual", "tilt_candidates_top50", "stop_cap",
                                      "tilt_default_with_cap", "train_step"}
