"""The GPU stream-ordering check's sequence, run on the CPU: the threaded trainer matches the
synchronous reference there too, and the comparison does see a difference."""

import json

from sglang_esamp.tools import gpu_stream_check


def test_the_threaded_run_matches_the_reference_on_cpu(capsys):
    assert gpu_stream_check.main(["--device", "cpu", "--steps", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["max_abs_diff"] == 0.0 and out["steps"] == 10


def test_the_comparison_sees_a_different_run():
    a = gpu_stream_check.run("cpu", "inline", 6, 0, seed=0)
    b = gpu_stream_check.run("cpu", "inline", 6, 0, seed=1)
    assert len(a) == 6 and all(p.shape == (16, 256) for p in a)
    assert min(float((x - y).abs().max()) for x, y in zip(a, b)) > 1e-3
