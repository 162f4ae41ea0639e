"""Stratified codes for the n rows of a group: arithmetic sampling (Vilnis et al., ICML 2023).

Each row samples by inverse CDF with a code ``c`` in [0, 1) instead of a fresh random
number. The token is the one whose interval ``[lo, hi)`` of the cumulative probability, in
the vocabulary's order, holds ``c``; the code is then rescaled into that interval,
``c <- (c - lo) / (hi - lo)``, and serves the next step. A group of n rows starts from the
codes ``c_i = (u + i / n) mod 1``, one random shift ``u`` per group:

- each code is uniform on its own, so each row is an exact draw from its distribution, step
  after step (the rescaled code is again uniform and independent of the token chosen);
- jointly the rows are stratified: while they share a state, a prefix of probability P
  gets floor(nP) or ceil(nP) of them, and a token with p < 1/n is drawn at most once;
  independent draws would collide there.

A float64 code holds 53 bits; each step spends ``log2(1/p)`` of them on the token it picks
(``bits``). Once a row has spent ``budget`` bits, what is left of its code is rounding
noise, so the row draws a fresh uniform code from the generator: still exact on its own, no
longer stratified against the group (whose rows have long diverged by then).

Codes live in a device table indexed by the request's row (``RequestTracker``): nothing is
read on the host.

Usage::

    strata = Strata(capacity=1024, device="cpu")
    strata.start(rows, torch.tensor([0, 1, 2, 3]) / 4, shift=0.37)   # a group of 4
    tokens = strata.pick(probs, rows)                                # probs: (N, V) >= 0

Shapes: N rows sampled, V vocabulary.
"""

from __future__ import annotations

import torch

BUDGET_BITS = 44.0  # bits a float64 code may spend before it is redrawn (of its 53)


class Strata:
    def __init__(self, capacity: int, device, budget: float = BUDGET_BITS, seed: int = 0):
        self.code = torch.zeros(capacity, dtype=torch.float64, device=device)  # (capacity,) in [0, 1)
        self.bits = torch.zeros(capacity, dtype=torch.float64, device=device)  # (capacity,) spent
        self.budget = budget
        self.generator = torch.Generator(device=device).manual_seed(seed)  # redraws; the same on every TP rank

    def start(self, rows: torch.Tensor, offsets: torch.Tensor, shift: float) -> None:
        """Codes ``(shift + offsets) mod 1`` for the (k,) table ``rows``; ``offsets`` (k,) are
        the rows' i / n in their group."""
        self.code[rows] = torch.remainder(offsets.to(self.code) + shift, 1.0)
        self.bits[rows] = 0.0

    def pick(self, probs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(N,) int64 tokens for the (N, V) unnormalised probabilities ``probs`` (zero for
        tokens the row may not take; every row has a positive one), advancing the codes of
        the (N,) table ``rows``.

        Two levels, each an exact inverse-CDF step: the code picks a block of ``block``
        consecutive tokens by the blocks' masses, then a token within the block by float64
        sums of its probabilities, and is rescaled at each level. One reduction over (N, V)
        and float64 work on (N, V / block) and (N, block) only."""
        self._redraw(rows)
        n, vocab = probs.shape
        block = _block(vocab)
        blocks = probs.reshape(n, vocab // block, block)  # (N, nb, B)
        code = self.code[rows].unsqueeze(-1)  # (N, 1)
        b, code, spent = _inverse_cdf(blocks.sum(-1).double(), code)  # the block
        inner = blocks.gather(1, b.unsqueeze(-1).expand(-1, -1, block)).squeeze(1).double()  # (N, B)
        j, code, spent_inner = _inverse_cdf(inner, code)  # the token within it
        self.code[rows] = code.squeeze(-1)
        self.bits[rows] += (spent + spent_inner).squeeze(-1)
        return (b * block + j).squeeze(-1)

    def _redraw(self, rows: torch.Tensor) -> None:
        """Fresh uniform codes for the rows that spent their budget."""
        spent = self.bits[rows] >= self.budget  # (N,)
        fresh = torch.rand(rows.shape, dtype=torch.float64, device=rows.device, generator=self.generator)
        self.code[rows] = torch.where(spent, fresh, self.code[rows])
        self.bits[rows] = torch.where(spent, torch.zeros_like(fresh), self.bits[rows])


def _block(vocab: int, largest: int = 256) -> int:
    """The largest power of two up to ``largest`` that divides ``vocab``."""
    block = largest
    while vocab % block:
        block //= 2
    return block


def _inverse_cdf(weights: torch.Tensor, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One arithmetic-sampling step: the (N, 1) entry of (N, K) float64 non-negative
    ``weights`` whose interval of their running sum holds ``code`` (N, 1) in [0, 1), the
    code rescaled into that interval, and the bits it spent, log2(total / width)."""
    cdf = weights.cumsum(-1).cummax(-1).values  # (N, K); a parallel scan may dip by a rounding error, cummax keeps it monotone
    total = cdf[:, -1:]  # (N, 1)
    target = torch.minimum(code * total, torch.nextafter(total, torch.zeros_like(total)))  # below the last bound
    k = torch.searchsorted(cdf, target, right=True).clamp_max(weights.shape[-1] - 1)  # (N, 1): the first bound above it
    k = torch.where(weights.gather(1, k) > 0, k, weights.argmax(-1, keepdim=True))  # a scan's rounding never picks a zero weight
    hi = cdf.gather(1, k)
    lo = torch.where(k > 0, cdf.gather(1, (k - 1).clamp_min(0)), torch.zeros_like(hi)).clamp_max(target)
    width = (hi - lo).clamp_min(torch.finfo(torch.float64).tiny)
    return k, ((target - lo) / width).clamp(0.0, 1.0 - 2.0**-53), torch.log2(total / width)
