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
- ``hold``: the stop ids' total probability is exactly the untilted one, neither higher nor
  lower: when to stop stays the model's decision, and the tilt only chooses among the other
  tokens. Their logits move by one common amount, up or down. The plausible and candidate
  forms need no cap for it: they leave the stop ids out of the tilt (``holds``; ``held`` in
  ``plausible_tilt`` and ``tilt_candidates``), so each keeps its untilted probability exactly.

Only stop logits ever move. Under the two bounds a row within its budget is returned as it
is and stop logits only move down; under ``hold`` they move either way.

The untilted row's side (``reference``) is read before the tilt, so the tilt may then write
into the very logits it read, and the tilted side after it (``apply``). Each side makes one
(n, V) float32 scratch tensor and works in it in place: no other row-sized temporaries. A
tilt that changes only K tokens of a row and keeps the row's total (the plausible form)
needs no tilted row at all: ``plausible`` reads both sides from the untilted row in one
pass and the K changed values, and returns the S stop logits to write.

Usage::

    cap = StopCap([2], "probability", device)
    ref = cap.reference(untilted, temperatures, keep)   # before tilting
    cap.apply(tilted, ref, temperatures)                # after, in place
    cap(tilted, untilted, temperatures, keep)           # both at once
    stops = cap.plausible(untilted, idx, before, after, temperatures)  # (n, S), K tokens changed

Shapes: n rows, V vocabulary, S stop ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CAPS = ("logit", "probability", "hold")


@dataclass(frozen=True)
class StopOdds:
    """One row set's stop ids against the rest, at the rows' temperatures."""

    stops: torch.Tensor  # (n, S) the stop ids' scaled logits
    rest: torch.Tensor  # (n,) log-sum-exp of every other token's scaled logit


def stop_odds(logits: torch.Tensor, stop_ids: torch.Tensor, t: torch.Tensor, keep: torch.Tensor | None = None) -> StopOdds:
    """The stop ids' scaled logits and the rest's log-sum-exp of (n, V) ``logits`` at (n, 1)
    temperatures ``t``, within ``keep`` (n, V) if given. The log-sum-exp is torch's own
    recipe (shift by the row's maximum, exp, sum, log), run in one scratch tensor."""
    work = torch.div(logits, t, out=torch.empty(logits.shape, dtype=torch.float32, device=logits.device))  # (n, V)
    if keep is not None:
        work.masked_fill_(~keep, float("-inf"))
    stops = work[:, stop_ids]  # (n, S), a copy
    work.index_fill_(1, stop_ids, float("-inf"))
    top = work.amax(-1, keepdim=True)  # (n, 1)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # no token left: the sum is 0, its log -inf
    rest = work.sub_(top).exp_().sum(-1).log_().add_(top.squeeze(-1))
    return StopOdds(stops, rest)


def _bound_odds(now: StopOdds, ref: StopOdds) -> torch.Tensor:
    """The ``logit`` cap: (n, S) the stop ids' scaled logits after it."""
    shift = (now.rest - ref.rest).masked_fill(now.rest == float("-inf"), float("inf"))  # only stops left: no bound
    bound = ref.stops + torch.nan_to_num(shift, nan=float("inf")).unsqueeze(-1)  # (n, S), scaled
    return torch.minimum(now.stops, bound)


def _bound_mass(now: StopOdds, ref: StopOdds) -> torch.Tensor:
    """The ``probability`` cap: (n, S) the stop ids' scaled logits after it."""
    budget = torch.logsumexp(ref.stops, -1) - ref.rest  # log-odds of stopping before
    odds = torch.logsumexp(now.stops, -1) - now.rest
    drop = torch.nan_to_num((odds - budget).clamp_min(0.0), nan=0.0, posinf=0.0)  # (n,)
    return now.stops - drop.unsqueeze(-1)


def _hold_mass(now: StopOdds, ref: StopOdds) -> torch.Tensor:
    """The ``hold`` cap: (n, S) the stop ids' scaled logits at which their total probability
    is the untilted one."""
    budget = torch.logsumexp(ref.stops, -1) - ref.rest
    odds = torch.logsumexp(now.stops, -1) - now.rest
    shift = torch.nan_to_num(odds - budget, nan=0.0, posinf=0.0, neginf=0.0)  # (n,); no stop left, or nothing else: as is
    return now.stops - shift.unsqueeze(-1)


def plausible_odds(x: torch.Tensor, idx: torch.Tensor, before: torch.Tensor, after: torch.Tensor, stop_ids: torch.Tensor,
                   t: torch.Tensor) -> tuple[StopOdds, StopOdds, torch.Tensor]:
    """Both sides of the cap for a row set that changes only at (n, K) token ids ``idx``,
    from ``before`` to ``after`` (the plausible form), without the tilted (n, V) row: the
    untilted ``x`` (n, V) at (n, 1) temperatures ``t``. One pass over V sums every token
    neither at ``idx`` nor a stop id (the same on both sides); the K changed tokens and the
    S stop ids are added to it per side, so no side subtracts one large sum from another.
    Also returns the (n, S) stop ids' tilted logits (their ``after`` value where changed)."""
    work = torch.div(x, t, out=torch.empty(x.shape, dtype=torch.float32, device=x.device))  # (n, V)
    top = work.amax(-1, keepdim=True)  # (n, 1)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    work.scatter_(1, idx, float("-inf")).index_fill_(1, stop_ids, float("-inf"))
    outside = work.sub_(top).exp_().sum(-1)  # (n,) the unchanged non-stop mass, shifted by the row's top
    at_stop = idx.unsqueeze(-1) == stop_ids  # (n, K, S): a changed token that is a stop id (ids are distinct)
    is_stop = at_stop.any(-1)  # (n, K)
    untilted = x[:, stop_ids]  # (n, S)
    tilted = torch.where(at_stop.any(1), torch.where(at_stop, after.unsqueeze(-1), 0).sum(1), untilted)

    def side(vals: torch.Tensor, stops: torch.Tensor) -> StopOdds:
        inside = torch.where(is_stop, 0.0, (vals.float() / t - top).exp()).sum(-1)  # (n,) the changed non-stop mass
        return StopOdds(stops.float() / t, (outside + inside).log() + top.squeeze(-1))

    return side(before, untilted), side(after, tilted), tilted


def _scale(temps: torch.Tensor) -> torch.Tensor:
    return temps.float().clamp_min(1e-6).view(-1, 1)  # (n, 1)


class StopCap:
    def __init__(self, stop_ids: list[int] | None, mode: str, device):
        if mode not in CAPS:
            raise ValueError(f"unknown stop cap {mode!r}; expected one of {', '.join(CAPS)}")
        self.stop_ids = torch.tensor(sorted(stop_ids or []), dtype=torch.int64, device=device)  # (S,)
        self.bound = {"logit": _bound_odds, "probability": _bound_mass, "hold": _hold_mass}[mode]
        self.holds = mode == "hold"  # a tilt that leaves the stop ids as they are needs no cap

    def reference(self, before: torch.Tensor, temps: torch.Tensor, keep: torch.Tensor | None = None) -> StopOdds | None:
        """The untilted side: (n, V) logits ``before`` at (n,) temperatures, within ``keep``
        (n, V) if given. None without stop ids."""
        if not self.stop_ids.numel():
            return None
        return stop_odds(before, self.stop_ids, _scale(temps), keep)

    def apply(self, tilted: torch.Tensor, ref: StopOdds | None, temps: torch.Tensor) -> torch.Tensor:
        """Cap (n, V) ``tilted`` (in place; -inf outside the kept set) against ``ref``."""
        if ref is None:
            return tilted
        t = _scale(temps)
        tilted[:, self.stop_ids] = self._capped(stop_odds(tilted, self.stop_ids, t), ref, tilted[:, self.stop_ids], t)
        return tilted

    def plausible(self, x: torch.Tensor, idx: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                  temps: torch.Tensor) -> torch.Tensor | None:
        """(n, S) the stop ids' logits after the cap, for rows of ``x`` (n, V) whose tilt
        changed only the (n, K) tokens ``idx`` from ``before`` to ``after`` (``plausible_odds``);
        None without stop ids. A stop id among ``idx`` gets its ``after`` value, capped."""
        if not self.stop_ids.numel():
            return None
        t = _scale(temps)
        ref, now, tilted = plausible_odds(x, idx, before, after, self.stop_ids, t)
        return self._capped(now, ref, tilted, t)

    def _capped(self, now: StopOdds, ref: StopOdds, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(n, S) the stop ids' ``logits`` after the cap: each one the cap moves at its scaled
        value times ``t``, every other one exactly as it was."""
        capped = self.bound(now, ref)  # (n, S), scaled
        return torch.where(capped != now.stops, capped * t, logits.float()).to(logits.dtype)

    def __call__(self, tilted: torch.Tensor, before: torch.Tensor, temps: torch.Tensor, keep: torch.Tensor | None = None):
        """(n, V) tilted logits capped (in place) against ``before`` (n, V), the untilted ones, at
        the rows' (n,) temperatures ``temps``, within ``keep`` (n, V) if given."""
        return self.apply(tilted, self.reference(before, temps, keep), temps)
