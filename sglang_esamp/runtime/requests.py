"""The request lifecycle: each ESamp request's group, slot, novelty and metadata.

``attach`` runs when the scheduler creates a request: the request's group finds (or opens)
its distiller slot in the ``GroupTable`` and the request gets a ``RequestState`` (its one
attribute on SGLang's Req, ``req.esamp``). ``release`` runs once when it finishes or is
aborted. The novelty ``||h - h_hat||`` of every row is summed per request on the device and
read on the host only for the finished request's metadata.

Usage::

    tracker = RequestTracker(cfg, device, on_new_group=lambda slot: ...)
    tracker.attach(req)                     # req.esamp: RequestState, or None without ESamp
    state = tracker.release(req)            # once; None if nothing to release
    tracker.metadata(state, stats)          # the response's meta_info["esamp"]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core import BatchLayout, ESampConfig, GroupStats, GroupTable
from .params import CUSTOM_KEY, group_label

MAX_TRACKED_REQUESTS = 65536  # rows of the per-request novelty table


@dataclass
class RequestState:
    beta: float
    key: str
    slot: int | None  # None: every slot was busy, the request samples untilted
    row_id: int | None  # index into the per-request novelty table; None when it is full
    released: bool = False

    @property
    def live_slot(self) -> int:
        """The slot the request's rows use, or -1 (none, or already released)."""
        return self.slot if self.slot is not None and not self.released else -1


def live_slots(states: list[RequestState | None]) -> list[int]:
    return [-1 if s is None else s.live_slot for s in states]


class RequestTracker:
    def __init__(self, cfg: ESampConfig, device, on_new_group: Callable[[int], None]):
        self.cfg = cfg
        self.table = GroupTable(cfg.max_groups, cfg.group_ttl)
        self.on_new_group = on_new_group  # called with a slot handed to a new group
        self.novelty_sum = torch.zeros(MAX_TRACKED_REQUESTS, device=device)
        self.novelty_count = torch.zeros(MAX_TRACKED_REQUESTS, device=device)
        self.free_rows = list(range(MAX_TRACKED_REQUESTS - 1, -1, -1))

    def attach(self, req) -> None:
        spec = (req.sampling_params.custom_params or {}).get(CUSTOM_KEY)
        if spec is None:
            return
        key = spec["group"]
        if self.cfg.group_by == "prompt" and key.startswith("r:"):
            key = "p:" + hashlib.sha1(str(list(req.origin_input_ids)).encode()).hexdigest()
        slot, fresh = self.table.acquire(key)
        if slot is not None and fresh:
            self.on_new_group(slot)
        row_id = self.free_rows.pop() if self.free_rows else None
        if row_id is not None:
            self.novelty_sum[row_id] = 0.0
            self.novelty_count[row_id] = 0.0
        req.esamp = RequestState(spec["explore"], key, slot, row_id)

    def release(self, req) -> RequestState | None:
        """The request finished or was aborted: free its row and its hold on the group."""
        state: RequestState | None = getattr(req, "esamp", None)
        if state is None or state.released:
            return None
        state.released = True
        if state.row_id is not None:
            self.free_rows.append(state.row_id)
        self.table.release(state.key)
        return state

    def metadata(self, state: RequestState, stats: GroupStats) -> dict:
        """What the response reports (host reads of the device counters)."""
        info = {"group": group_label(state.key), "explore": state.beta, "slot": state.slot}
        if state.slot is not None:
            snap = stats.snapshot(state.slot)
            info |= {k: snap[k] for k in ("steps", "loss", "loss_mean", "rel_err")}
        count = float(self.novelty_count[state.row_id]) if state.row_id is not None else 0.0
        info["novelty"] = float(self.novelty_sum[state.row_id]) / count if count else None
        return info

    def record_novelty(self, states: list, layout: BatchLayout, h: torch.Tensor, h_hat: torch.Tensor) -> None:
        """Add ||h - h_hat|| of each layout row to its request's sum. h: (batch, D); h_hat: (M, D)."""
        ids = [states[r].row_id for r in layout.row_list]
        rows_idx = layout.rows
        if None in ids:  # the table is full: leave the untracked requests out
            keep = [i for i, r in enumerate(ids) if r is not None]
            ids, h_hat, rows_idx = [ids[i] for i in keep], h_hat[keep], rows_idx[keep]
        rows = torch.tensor(ids, dtype=torch.int64, device=h.device)
        novelty = (h[rows_idx].float() - h_hat.float()).norm(dim=-1)  # (M,)
        self.novelty_sum.index_add_(0, rows, novelty)
        self.novelty_count.index_add_(0, rows, torch.ones_like(novelty))
