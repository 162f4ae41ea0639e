"""The request lifecycle: each ESamp request's group, slot, novelty and metadata.

``attach`` runs when the scheduler creates a request: the request's group finds (or opens)
its distiller slot in the ``GroupTable`` and the request gets a ``RequestState`` (its one
attribute on SGLang's Req, ``req.esamp``). It trusts nothing: a spec that is not one the
API layer makes, or any error, leaves the request plain (counted in ``rejected``). When
every slot is busy the request is denied one; ``retry`` (called at each of its steps) gives
it the next slot that frees, so a denied request does not stay untilted for its whole life.
``release`` runs once when the request finishes or is aborted, and releases only the hold
it acquired. The novelty ``||h - h_hat||`` of every row is summed per request on the device
and read on the host only for the finished request's metadata.

A request's novelty row is reused once it is released: it goes to the back of the free rows
(first in, first out), a released request's rows record nothing more, and the new request's
row is zeroed in the step that first records it, on the stream that wrote the old sums and
after them (not on the scheduler's stream at attach, where it could land before a write
still in flight).

Usage::

    tracker = RequestTracker(cfg, device, on_new_group=lambda slot: ...)
    tracker.attach(req)                     # req.esamp: RequestState, or None without ESamp
    state = tracker.release(req)            # once; None if nothing to release
    tracker.metadata(state, stats)          # the response's meta_info["esamp"]
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core import BatchLayout, ESampConfig, GroupStats, GroupTable
from .params import CUSTOM_KEY, group_label, read_spec
from .strata import StrataSampler

logger = logging.getLogger(__name__)

MAX_TRACKED_REQUESTS = 65536  # rows of the per-request novelty table


@dataclass
class RequestState:
    beta: float
    key: str
    slot: int | None  # None: every slot was busy, the request samples untilted until one frees
    row_id: int | None  # index into the per-request novelty table; None when it is full
    released: bool = False
    denied: bool = False  # it waited for a slot at some point
    stratified: bool = False  # it samples with a stratified code (``strata.py``)
    diverged: bool = False  # its output has left every other running sample's of its group (``prefixes.py``)

    @property
    def live_slot(self) -> int:
        """The slot the request's rows use, or -1 (none, or already released)."""
        return self.slot if self.slot is not None and not self.released else -1


def live_slots(states: list[RequestState | None]) -> list[int]:
    return [-1 if s is None else s.live_slot for s in states]


class RequestTracker:
    def __init__(self, cfg: ESampConfig, device, on_new_group: Callable[[int], None], clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.table = GroupTable(cfg.max_groups, cfg.group_ttl, clock)  # clock: for the ttl of idle groups
        self.on_new_group = on_new_group  # called with a slot handed to a new group
        self.novelty_sum = torch.zeros(MAX_TRACKED_REQUESTS, device=device)
        self.novelty_count = torch.zeros(MAX_TRACKED_REQUESTS, device=device)
        self.free_rows = deque(range(MAX_TRACKED_REQUESTS))  # the longest free goes first
        self.unzeroed: set[int] = set()  # rows handed to a request, still holding their last request's sums
        self.strata = StrataSampler(MAX_TRACKED_REQUESTS, device, cfg.seed)  # codes per row of the same table
        self.rejected = 0  # requests whose ESamp spec was not valid: they ran plain

    def attach(self, req) -> None:
        try:
            custom = req.sampling_params.custom_params
            spec = custom.get(CUSTOM_KEY) if isinstance(custom, dict) else None
            if spec is None:
                return
            parsed = read_spec(spec, self.cfg)
            if parsed is None:
                self._reject(req, f"an ESamp spec that the API layer does not make: {str(spec)[:80]}")
                return
            beta, key, strata = parsed
            if self.cfg.group_by == "prompt" and key.startswith("r:"):
                key = "p:" + hashlib.sha1(str(list(req.origin_input_ids)).encode()).hexdigest()
            slot = self._acquire(key, count_denial=True)
            state = req.esamp = RequestState(beta, key, slot, None, denied=slot is None)
            if self.free_rows:
                state.row_id = self.free_rows.popleft()
                self.unzeroed.add(state.row_id)  # zeroed in its first step (record_novelty)
                if strata is not None and req.sampling_params.max_new_tokens != 0:  # not SGLang's prefix warm-up
                    self.strata.join(state.row_id, *strata)  # the code starts in its first sampled step
                    state.stratified = True
        except Exception:  # never a reason to fail the scheduler: the request runs plain
            logger.exception("ESamp could not attach request %s; it samples untilted", getattr(req, "rid", "?"))
            self._reject(req, None)

    def _reject(self, req, why: str | None) -> None:
        self.rejected += 1
        if why is not None:
            logger.warning("ESamp: request %s carries %s; it samples untilted", getattr(req, "rid", "?"), why)
        if getattr(req, "esamp", None) is not None:
            self.release(req)
        req.esamp = None

    def _acquire(self, key: str, count_denial: bool) -> int | None:
        slot, fresh = self.table.acquire(key, count_denial=count_denial)
        if slot is not None and fresh:
            self.on_new_group(slot)
        return slot

    def retry(self, state: RequestState) -> None:
        """A denied, still running request: take a slot for its group if one is free now."""
        if state.slot is None and not state.released:
            state.slot = self._acquire(state.key, count_denial=False)

    def release(self, req) -> RequestState | None:
        """The request finished or was aborted: free its row and the hold it acquired."""
        state: RequestState | None = getattr(req, "esamp", None)
        if state is None or state.released:
            return None
        state.released = True
        if state.row_id is not None:
            self.free_rows.append(state.row_id)
            self.strata.unstarted.pop(state.row_id, None)  # released before its first step
        if state.slot is not None:  # a denied request holds nothing
            self.table.release(state.key)
        return state

    def metadata(self, state: RequestState, stats: GroupStats) -> dict:
        """What the response reports: two host reads, the slot's counters and the request's novelty."""
        info = {"group": group_label(state.key), "explore": state.beta, "stratified": state.stratified, "slot": state.slot,
                "denied": state.denied}
        if state.slot is not None:
            snap = stats.snapshot(state.slot)
            info |= {k: snap[k] for k in ("steps", "loss", "loss_mean", "rel_err")}
        total, count = 0.0, 0.0
        if state.row_id is not None and state.row_id not in self.unzeroed:
            total, count = torch.stack([self.novelty_sum[state.row_id], self.novelty_count[state.row_id]]).tolist()
        info["novelty"] = total / count if count else None
        return info

    def record_novelty(self, states: list, layout: BatchLayout, h: torch.Tensor, h_hat: torch.Tensor) -> None:
        """Add ||h - h_hat|| of each layout row to its request's sum, on the stream that samples.
        Rows without a table row (the table is full) or of a released request (its metadata is
        made) are left out. h: (batch, D); h_hat: (M, D)."""
        tracked = [states[r].row_id is not None and not states[r].released for r in layout.row_list]
        rows_idx = layout.rows
        if not all(tracked):
            keep = [i for i, kept in enumerate(tracked) if kept]
            h_hat, rows_idx = h_hat[keep], rows_idx[keep]
        ids = [states[r].row_id for r, kept in zip(layout.row_list, tracked) if kept]
        if not ids:
            return
        fresh = self.unzeroed.intersection(ids)
        if fresh:  # a request's first step: issued after every write of the row's last request
            self.unzeroed -= fresh
            idx = torch.tensor(sorted(fresh), dtype=torch.int64, device=h.device)
            self.novelty_sum.index_fill_(0, idx, 0.0)
            self.novelty_count.index_fill_(0, idx, 0.0)
        rows = torch.tensor(ids, dtype=torch.int64, device=h.device)
        novelty = (h[rows_idx].float() - h_hat.float()).norm(dim=-1)  # (M,)
        self.novelty_sum.index_add_(0, rows, novelty)
        self.novelty_count.index_add_(0, rows, torch.ones_like(novelty))
