"""The stop cap: the tilt never makes end-of-sequence likelier than the untilted row.

A young distiller underrates the end-of-sequence ids, so the plain tilt pumps them (up to
half of the samples ended early on SmolLM2). ``--esamp-stop-cap`` picks one of two caps. Both
compare the tilted row ``x'`` with the untilted one ``x`` in log-probability space at the
row's temperature T and within the row's kept set, so a per-row offset of either logit
vector changes nothing, and the cap never acts as a hidden end-of-sequence penalty:

- ``probability``: the stop ids' total probability is no higher than untilted. Their logits
  drop by one common amount, so their ratios to each other stay.
- ``logit``: each stop id's odds against the non-stop tokens are no higher than untilted,
  x'_s/T - lse_{v not stop}(x'_v/T) <= x_s/T - lse_{v not stop}(x_v/T). Stricter: it also
  bounds the total, and no single stop id gains against the rest of the vocabulary.

A row within its budget is returned as it is; only stop logits ever move, and only down.

Usage::

    cap = StopCap([2], "probability", device)
    tilted = cap(tilted, untilted, temperatures, keep)

Shapes: n rows, V vocabulary, S stop ids.
"""

from __future__ import annotations

import torch

CAPS = ("logit", "probability")


def _split_lse(logits: torch.Tensor, stop_ids: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, S) the stop ids' scaled logits and (n,) the log-sum-exp of every other token's,
    at (n, 1) temperatures t: one pass to scale, one to sum."""
    scaled = logits.float() / t  # (n, V), a fresh tensor
    stops = scaled[:, stop_ids]
    return stops, torch.logsumexp(scaled.index_fill_(1, stop_ids, float("-inf")), -1)


def cap_stop_odds(tilted: torch.Tensor, before: torch.Tensor, stop_ids: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """The ``logit`` cap on (n, V) ``tilted`` (in place) against (n, V) ``before`` (masked
    alike), at (n,) temperatures."""
    t = temperature.float().clamp_min(1e-6).view(-1, 1)  # (n, 1)
    stops, rest = _split_lse(tilted, stop_ids, t)
    ref_stops, ref_rest = _split_lse(before, stop_ids, t)
    shift = (rest - ref_rest).masked_fill(rest == float("-inf"), float("inf"))  # only stops left: no bound
    bound = ref_stops + torch.nan_to_num(shift, nan=float("inf")).unsqueeze(-1)  # (n, S), scaled
    tilted[:, stop_ids] = (torch.minimum(stops, bound) * t).to(tilted.dtype)
    return tilted


def cap_stop_mass(tilted: torch.Tensor, before: torch.Tensor, stop_ids: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """The ``probability`` cap on (n, V) ``tilted`` (in place) against (n, V) ``before``
    (masked alike), at (n,) temperatures."""
    t = temperature.float().clamp_min(1e-6).view(-1, 1)  # (n, 1)
    stops, rest = _split_lse(tilted, stop_ids, t)
    ref_stops, ref_rest = _split_lse(before, stop_ids, t)
    budget = torch.logsumexp(ref_stops, -1) - ref_rest  # log-odds of stopping before
    odds = torch.logsumexp(stops, -1) - rest
    drop = torch.nan_to_num((odds - budget).clamp_min(0.0), nan=0.0, posinf=0.0) * t.squeeze(-1)  # (n,)
    tilted[:, stop_ids] -= drop.to(tilted.dtype).unsqueeze(-1)
    return tilted


class StopCap:
    def __init__(self, stop_ids: list[int] | None, mode: str, device):
        if mode not in CAPS:
            raise ValueError(f"unknown stop cap {mode!r}; expected one of {', '.join(CAPS)}")
        self.stop_ids = torch.tensor(sorted(stop_ids or []), dtype=torch.int64, device=device)  # (S,)
        self.cap = cap_stop_odds if mode == "logit" else cap_stop_mass

    def __call__(self, tilted: torch.Tensor, before: torch.Tensor, temps: torch.Tensor, keep: torch.Tensor | None = None):
        """(n, V) tilted logits capped (in place) against ``before`` (n, V), the untilted ones, at
        the rows' (n,) temperatures ``temps``, within ``keep`` (n, V) if given (``tilted`` is
        -inf outside it)."""
        if not self.stop_ids.numel():
            return tilted
        if keep is not None:
            before = before.masked_fill(~keep, float("-inf"))
        return self.cap(tilted, before, self.stop_ids, temps.view(-1))
