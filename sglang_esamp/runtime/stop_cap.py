"""The stop-token cap, in every form of the tilt: the tilt never raises end-of-sequence.

A young distiller underrates the end-of-sequence ids, so the paper's tilt pumps them (up to
half of the samples ended early on SmolLM2). Two levels (``--esamp-stop-cap``):

- ``logit``: after the tilt, each stop id keeps at most its untilted logit;
- ``probability``: also the stop ids' total probability at the row's temperature (within the
  row's kept set) is no higher than untilted (``core.tilt.cap_stop_mass``).

The dense and candidate forms have the untilted logits at hand (``after_tilt``). The
head-input form has only the mixed logits (that is its saving), so ``head_input`` computes
the untilted stop logits from the head input (a (rows, D) x (D, S) product), and for the
probability cap the full untilted logits of the ceil(L / ``MASS_CAP_SHARE``) rows whose
tilted stop probability is highest: every row it skips is less likely to stop than every
row it caps. The pick is a device ``topk``: fixed shapes, no host read.

Usage::

    cap = StopCap([2], "probability", device)
    logits[r] = cap.after_tilt(tilted, before, temperatures[r], keep)
"""

from __future__ import annotations

import torch

from ..core.tilt import cap_stop_mass

MASS_CAP_SHARE = 8  # the probability cap's share of head-input rows that get full untilted logits


class StopCap:
    def __init__(self, stop_ids: list[int] | None, mode: str, device):
        self.stop_ids = torch.tensor(sorted(stop_ids or []), dtype=torch.int64, device=device)  # (S,)
        self.mode = mode

    def after_tilt(self, tilted: torch.Tensor, before: torch.Tensor, temps: torch.Tensor, keep=None) -> torch.Tensor:
        """(n, V) tilted logits, capped against ``before`` (n, V), the untilted logits, at the
        rows' (n,) temperatures ``temps``, within ``keep`` (n, V) if given."""
        if not self.stop_ids.numel():
            return tilted
        tilted[:, self.stop_ids] = torch.minimum(tilted[:, self.stop_ids], before[:, self.stop_ids])
        if self.mode == "probability":
            tilted = cap_stop_mass(tilted, before, self.stop_ids, temps.view(-1), keep)
        return tilted

    def head_input(
        self, logits: torch.Tensor, src: torch.Tensor, rows: torch.Tensor, shift: torch.Tensor, temps: torch.Tensor,
        head_weight: torch.Tensor,
    ) -> None:
        """Cap, in place, the ``rows`` (L,) of ``logits`` (batch, V) that the head computed from a
        mixed input. ``src`` (L, D): those rows' untilted head input; ``shift`` (L,): the mixed
        logits' per-row offset (``core.tilt.mix_residual``); ``temps``: (batch,) or (batch, 1)."""
        if not self.stop_ids.numel():
            return
        src = src.to(head_weight.dtype)
        before = src @ head_weight[self.stop_ids].t() + shift.unsqueeze(-1)  # (L, S)
        r, cols = rows.unsqueeze(1), self.stop_ids.unsqueeze(0)
        logits[r, cols] = torch.minimum(logits[r, cols], before.to(logits.dtype))
        if self.mode == "probability":
            self._cap_likeliest(logits, src, rows, temps[rows].view(-1).float(), head_weight)

    def _cap_likeliest(self, logits, src, rows, temps, head_weight) -> None:
        scaled = logits[rows].float() / temps.unsqueeze(-1)  # (L, V)
        stop_lp = torch.logsumexp(scaled[:, self.stop_ids], -1) - torch.logsumexp(scaled, -1)  # (L,)
        pick = torch.topk(stop_lp, -(-len(rows) // MASS_CAP_SHARE)).indices  # (m,)
        before = src[pick] @ head_weight[: logits.shape[-1]].t()  # (m, V)
        r = rows[pick]
        logits[r] = cap_stop_mass(logits[r], before.to(logits.dtype), self.stop_ids, temps[pick])
