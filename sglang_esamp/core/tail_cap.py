"""The tail cap: the tilt explores among the tokens the model finds plausible, never in its tail.

Sampling far from the model's typical text breaks it: once a row takes a token the model
itself found implausible, the context is one the distiller has not seen, the tilt grows
there, and the row leaves language for good (token soup, loops). The cap takes the tail out
of the tilt's reach. At the row's temperature T and before the tilt, a token is in the
*tail* when its probability is below ``floor`` times the top token's (the min-p rule).
Then:

- tail tokens are not tilted (``untilted``: the tilt adds nothing to them);
- their total probability may not rise above the untilted row's: when the tilt lowered the
  plausible tokens and the tail gained by normalisation, every tail logit drops by one
  common amount, so their ratios to each other stay.

So every tail token is at most as likely as in plain sampling, and all the tilt's movement
of probability happens within the plausible set; unlike a min-p filter, the tail is kept,
so the distribution at explore 0 is plain sampling's.

Usage::

    cap = TailCap(0.05)
    ref = cap.reference(untilted, temperatures)   # before tilting; ref.tail is the (n, V) mask
    ...tilt, adding nothing where ref.tail...
    cap.apply(tilted, ref, temperatures)          # after, in place

Shapes: n rows, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TailRef:
    tail: torch.Tensor  # (n, V) bool: the untilted row's implausible tokens
    odds: torch.Tensor  # (n,) log of the tail's total probability over the rest's, untilted


def _scaled(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(n, V) float32 logits / T, in a fresh scratch tensor."""
    return torch.div(logits, t, out=torch.empty(logits.shape, dtype=torch.float32, device=logits.device))


def _log_odds(work: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """(n,) log(tail mass / the rest's) of scaled logits ``work`` (consumed), each side's
    log-sum-exp taken on its own: the tilt may leave the rest far below the tail, where a
    difference of sums would cancel. -inf for an empty tail."""
    rest = torch.logsumexp(work.masked_fill(tail, float("-inf")), -1)
    return torch.logsumexp(work.masked_fill_(~tail, float("-inf")), -1) - rest


class TailCap:
    def __init__(self, floor: float):
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"the tail cap's floor must be in [0, 1); got {floor}")
        self.floor = floor

    @property
    def on(self) -> bool:
        return self.floor > 0.0

    def reference(self, before: torch.Tensor, temps: torch.Tensor) -> TailRef | None:
        """The untilted side of (n, V) logits ``before`` at (n,) temperatures; None when off."""
        if not self.on:
            return None
        work = _scaled(before, _scale(temps))
        tail = work < work.amax(-1, keepdim=True) + math.log(self.floor)  # (n, V); the top token is never in it
        return TailRef(tail, _log_odds(work, tail))

    def apply(self, tilted: torch.Tensor, ref: TailRef | None, temps: torch.Tensor) -> torch.Tensor:
        """Lower the tail of (n, V) ``tilted`` (in place) to its untilted share, where it rose."""
        if ref is None:
            return tilted
        t = _scale(temps)
        odds = _log_odds(_scaled(tilted, t), ref.tail)
        drop = torch.nan_to_num((odds - ref.odds).clamp_min(0.0), nan=0.0, posinf=0.0) * t.squeeze(-1)  # (n,)
        return tilted.sub_(ref.tail.to(tilted.dtype) * drop.to(tilted.dtype).unsqueeze(-1))


def _scale(temps: torch.Tensor) -> torch.Tensor:
    return temps.float().clamp_min(1e-6).view(-1, 1)  # (n, 1)
