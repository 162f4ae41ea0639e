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


def _non_stop_lse(scaled: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    """(n,) log-sum-exp over the tokens that are not stop ids."""
    return torch.logsumexp(scaled.index_fill(1, stop_ids, float("-inf")), -1)


def cap_stop_odds(tilted: torch.Tensor, before: torch.Tensor, stop_ids: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """The ``logit`` cap on (n, V) ``tilted`` against (n, V) ``before`` (masked alike), at (n,) temperatures."""
    t = temperature.float().clamp_min(1e-6).view(-1, 1)  # (n, 1)
    rest = _non_stop_lse(tilted.float() / t, stop_ids)  # (n,)
    shift = (t.squeeze(-1) * (rest - _non_stop_lse(before.float() / t, stop_ids))).masked_fill(rest == float("-inf"), float("inf"))
    bound = before[:, stop_ids].float() + torch.nan_to_num(shift, nan=float("inf")).unsqueeze(-1)  # (n, S); only stops left: no bound
    out = tilted.clone()
    out[:, stop_ids] = torch.minimum(tilted[:, stop_ids].float(), bound).to(tilted.dtype)
    return out


def cap_stop_mass(tilted: torch.Tensor, before: torch.Tensor, stop_ids: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """The ``probability`` cap on (n, V) ``tilted`` against (n, V) ``before`` (masked alike), at (n,) temperatures."""
    t = temperature.float().clamp_min(1e-6).view(-1, 1)  # (n, 1)
    ref, scaled = before.float() / t, tilted.float() / t
    budget = torch.logsumexp(ref[:, stop_ids], -1) - _non_stop_lse(ref, stop_ids)  # log-odds of stopping before
    odds = torch.logsumexp(scaled[:, stop_ids], -1) - _non_stop_lse(scaled, stop_ids)
    drop = torch.nan_to_num((odds - budget).clamp_min(0.0), nan=0.0, posinf=0.0) * t.squeeze(-1)  # (n,)
    out = tilted.clone()
    out[:, stop_ids] = tilted[:, stop_ids] - drop.to(tilted.dtype).unsqueeze(-1)
    return out


class StopCap:
    def __init__(self, stop_ids: list[int] | None, mode: str, device):
        if mode not in CAPS:
            raise ValueError(f"unknown stop cap {mode!r}; expected one of {', '.join(CAPS)}")
        self.stop_ids = torch.tensor(sorted(stop_ids or []), dtype=torch.int64, device=device)  # (S,)
        self.cap = cap_stop_odds if mode == "logit" else cap_stop_mass

    def __call__(self, tilted: torch.Tensor, before: torch.Tensor, temps: torch.Tensor, keep: torch.Tensor | None = None):
        """(n, V) tilted logits capped against ``before`` (n, V), the untilted ones, at the rows'
        (n,) temperatures ``temps``, within ``keep`` (n, V) if given (``tilted`` is -inf outside it)."""
        if not self.stop_ids.numel():
            return tilted
        if keep is not None:
            before = before.masked_fill(~keep, float("-inf"))
        return self.cap(tilted, before, self.stop_ids, temps.view(-1))
