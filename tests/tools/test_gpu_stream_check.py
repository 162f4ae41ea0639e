"""The GPU stream-ordering check's sequence, run on the CPU: the threaded trainer matches the
synchronous reference there too, and the comparison does see a difference. (The same
scenario runs on a CPU stand-in of CUDA's streams in tests/core/test_gpu_path.py.)"""

import json

import pytest

from sglang_esamp.tools import gpu_stream_check


@pytest.mark.parametrize("distiller", ["tail", "mlp"])
def test_the_threaded_run_matches_the_reference_on_cpu(capsys, distiller):
    assert gpu_stream_check.main(["--device", "cpu", "--steps", "10", "--distiller", distiller]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["max_abs_diff"] == 0.0 and out["steps"] == 10


def test_the_comparison_sees_a_different_run(monkeypatch, capsys):
    real = gpu_stream_check.run

    def off_by_a_little(device, mode, *args, **kwargs):
        out = real(device, mode, *args, **kwargs)
        if mode == "thread":
            out[3][0, 0] += 1e-3  # one prediction of step 3
        return out

    monkeypatch.setattr(gpu_stream_check, "run", off_by_a_little)
    assert gpu_stream_check.main(["--device", "cpu", "--steps", "6"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["mismatched_steps"] == [3] and not out["ok"]
