"""Stratified sampling in the scheduler: which requests take codes, and the draw itself.

A request with stratified sampling (``stratified``, on by default for an ESamp request with
n > 1) carries ``strata = [call, n]`` in its spec: ``call`` names the API call its n
samples came from, once per prompt. SGLang sends the n copies of a prompt to the scheduler
one after another, so ``join`` gives each its index i in arrival order and its code
``(u + i / n) mod 1`` (core/strata.py), with ``u`` a hash of ``call``: every TP rank
computes the same codes without talking. The code is written in the request's first
sampled step, on the stream that samples (as the novelty table's rows are zeroed). The
prefix warm-up SGLang sends before the copies (``max_new_tokens`` 0) takes no index.

``resample`` runs inside SGLang's sampler, on the probabilities it samples from (after
penalties, grammar, bias, ESamp's tilt and temperature): for the stratified rows it applies
the row's top-k / top-p / min-p exactly as SGLang's torch sampler does and replaces SGLang's
draw by the code's (when every row is stratified, the runtime skips SGLang's draw). Greedy
rows keep their argmax.

Usage::

    strata = StrataSampler(capacity, device)
    strata.join(row_id, call, n)                          # when the request is attached
    rows = strata.rows_of(step)                           # once per step: the stratified rows
    strata.resample(ids, probs, info, rows, filtered)     # in SGLang's sampler
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from ..core import Strata
from .filters import keep_mask

MAX_CALLS = 4096  # calls whose copies are still arriving (an aborted call's entry ages out)


def shift_of(call: str) -> float:
    """The group's shift u in [0, 1), from its call id alone."""
    return int(hashlib.sha256(call.encode()).hexdigest()[:13], 16) / 16**13


class StrataSampler:
    def __init__(self, capacity: int, device, seed: int = 0):
        self.codes = Strata(capacity, device, seed=seed)
        self.arrived: OrderedDict[str, int] = OrderedDict()  # call -> copies attached so far
        self.unstarted: dict[int, float] = {}  # table row -> its code, written in its first sampled step

    def join(self, row_id: int, call: str, n: int) -> None:
        """The request in table row ``row_id`` is the next copy of ``call``: its code."""
        i = self.arrived.pop(call, 0)
        if i + 1 < n:
            self.arrived[call] = i + 1
            while len(self.arrived) > MAX_CALLS:
                self.arrived.popitem(last=False)
        self.unstarted[row_id] = (shift_of(call) + (i % n) / n) % 1.0

    def rows_of(self, step) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(k,) batch rows and (k,) table rows of the step's stratified, sampled requests;
        None if there are none. Host-side, once per step; the step's new codes are written
        here, on the stream that samples."""
        picked = [(r, s.row_id) for r, (s, req) in enumerate(zip(step.states, step.reqs))
                  if s is not None and s.stratified and not s.released and s.row_id is not None and req.sampling_params.top_k != 1]
        if not picked:
            return None
        batch_rows, table_rows = zip(*picked)
        fresh = [row for row in table_rows if row in self.unstarted]
        if fresh:
            device = self.codes.code.device
            codes = torch.tensor([self.unstarted.pop(row) for row in fresh], dtype=torch.float64)
            self.codes.start(torch.tensor(fresh, device=device), codes.to(device, non_blocking=True), 0.0)
        return torch.tensor(batch_rows), torch.tensor(table_rows)

    def resample(self, ids: torch.Tensor, probs: torch.Tensor, info, rows: tuple[torch.Tensor, torch.Tensor], filtered: bool) -> None:
        """Write the codes' tokens into (rows,) ``ids`` at the stratified rows, in place (over
        SGLang's draw, or into an unwritten tensor when every row is stratified).
        probs: (rows, V) after temperature; ``filtered``: the batch has top-k/top-p/min-p."""
        b, table = (t.to(probs.device, non_blocking=True) for t in rows)
        whole = len(rows[0]) == probs.shape[0]  # every row, in order (``rows_of`` lists them ascending)
        p = probs if whole else probs[b]  # (k, V); SGLang's own when every row is stratified: not written
        if filtered:
            p = p.masked_fill(~keep_mask(p, info.top_ks[b], info.top_ps[b], info.min_ps[b]), 0.0)
        ids[b] = self.codes.pick(p, table).to(ids.dtype)
