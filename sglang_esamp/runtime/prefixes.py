"""Rows that still share their group's prefix: samples whose generated tokens so far equal
another running sample's of the same group in the batch.

Such rows are in one state: they get one prediction and one tilt, and only the sampler's
draw (stratified, ``strata.py``) can separate them. With ``--esamp-shared-prefix-tilt off``
the planner leaves them untilted until they diverge. A row that has diverged from every
sample of its batch is marked once (``RequestState.diverged``) and never compared again, so
the comparison runs only over an answer's first tokens. Host-side, from SGLang's request
objects: every TP rank sees the same tokens, so every rank decides the same.

Usage::

    rows = shared_rows(step.states, step.reqs)   # set of batch rows
"""

from __future__ import annotations

from collections import defaultdict


def shared_rows(states: list, reqs: list) -> set[int]:
    """Batch rows whose request has a live slot, has not diverged, and whose output so far
    equals another such row's of the same group; marks the rows found unique as diverged."""
    by_prefix: dict[tuple, list[int]] = defaultdict(list)
    for row, (state, req) in enumerate(zip(states, reqs)):
        if state is not None and state.live_slot >= 0 and not state.diverged:
            by_prefix[(state.key, tuple(req.output_ids))].append(row)
    shared = set()
    for rows in by_prefix.values():
        if len(rows) > 1:
            shared.update(rows)
        elif reqs[rows[0]].output_ids:  # alone with its prefix in this batch: it has left its group's shared start
            states[rows[0]].diverged = True
    return shared
