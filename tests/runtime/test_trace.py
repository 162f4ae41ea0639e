"""StepTrace (runtime/trace.py): per-step numbers written on the device, checked against
sums written out by hand, the ring's wrap, and the file a rank writes."""

import json

import torch

from sglang_esamp.runtime.trace import TRACE_ENV, StepTrace


def test_each_step_keeps_its_weighted_predictions_and_draws(tmp_path, monkeypatch):
    trace = StepTrace("cpu", steps=3)
    h_hat = torch.tensor([[1.0, 2.0], [4.0, float("nan")]])  # rows 1 and 2: 1*(1+2) + 2*(4+0)
    trace.predictions(h_hat)
    trace.tokens(torch.tensor([5, 7]))  # 1*5 + 2*7
    assert trace.rows() == [(0, 11.0, 19.0)]
    swapped = StepTrace("cpu")
    swapped.predictions(h_hat.flip(0))
    assert swapped.rows()[0][1] == 10.0  # the same rows in another order differ
    for k in range(4):  # a greedy step draws nothing here: its draws stay 0
        trace.predictions(torch.full((1, 2), float(k)))
    assert trace.rows() == [(2, 2.0, 0.0), (3, 4.0, 0.0), (4, 6.0, 0.0)]  # the last 3 steps, oldest first
    assert trace.dump(0) is None  # no folder given: nothing written
    monkeypatch.setenv(TRACE_ENV, str(tmp_path))
    path = trace.dump(1)
    assert path == tmp_path / "rank1.json"
    assert json.loads(path.read_text()) == {"steps": 5, "rows": [[2, 2.0, 0.0], [3, 4.0, 0.0], [4, 6.0, 0.0]]}
