"""StepTrace: under tensor parallelism, each rank's record of every ESamp step, so that ranks
can be compared step by step rather than once after a drain.

Every rank must predict, tilt and draw alike (SGLang reconciles the ranks' tokens with a MIN
all-reduce, which would hide a disagreement by picking the lower id). Per step the trace
keeps two float64 numbers on the device: the step's predictions and the tokens the rank drew
itself, before that reconciliation, each summed with a weight per row (so that swapped rows
show). Nothing is read on the host in the step; ``rows`` reads the table (a sync, on the
control path). The last ``TRACE_STEPS`` steps are kept.

With ``$SGLANG_ESAMP_TP_TRACE`` set to a folder, each rank writes its table there whenever
it reports its state (``/get_server_info``), as ``rank<r>.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

TRACE_STEPS = 512
TRACE_ENV = "SGLANG_ESAMP_TP_TRACE"


def _weighted(x: torch.Tensor) -> torch.Tensor:
    """() float64: sum over rows of (row index + 1) x the row's sum; non-finite entries count 0."""
    rows = x.double().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).reshape(x.shape[0], -1).sum(-1)  # (N,)
    return (rows * torch.arange(1, x.shape[0] + 1, dtype=torch.float64, device=x.device)).sum()


class StepTrace:
    def __init__(self, device, steps: int = TRACE_STEPS):
        self.table = torch.zeros(steps, 2, dtype=torch.float64, device=device)  # (S, 2): predictions, own draws
        self.steps = 0  # steps begun

    def predictions(self, h_hat: torch.Tensor) -> None:
        """A step begins: its (M, D) predictions."""
        row = self.table[self.steps % self.table.shape[0]]
        row[0] = _weighted(h_hat)
        row[1] = 0.0  # a step that draws nothing here (greedy rows) keeps 0
        self.steps += 1

    def tokens(self, ids: torch.Tensor) -> None:
        """The current step's (rows,) token ids as this rank drew them."""
        if self.steps:
            self.table[(self.steps - 1) % self.table.shape[0], 1] = _weighted(ids)

    def rows(self) -> list[tuple[int, float, float]]:
        """(step, predictions, draws) of the kept steps, oldest first. Reads the device."""
        size = self.table.shape[0]
        first = max(0, self.steps - size)
        values = self.table.tolist()
        return [(k, *values[k % size]) for k in range(first, self.steps)]

    def dump(self, rank: int) -> Path | None:
        """Write the table to ``$SGLANG_ESAMP_TP_TRACE/rank<rank>.json`` when the variable is set."""
        folder = os.environ.get(TRACE_ENV)
        if not folder:
            return None
        path = Path(folder) / f"rank{rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"steps": self.steps, "rows": self.rows()}))
        tmp.replace(path)
        return path
