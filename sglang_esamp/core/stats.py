"""GroupStats: per-slot counters of the distillers, kept on the device.

Updated by the trainer after every step with index ops (no host reads), read on the host
only when somebody asks: a finished request's metadata or the server's stats route. On CUDA
the trainer writes them on its side stream and the scheduler clears a slot on its own, so
every access goes through ``StreamFences`` (a new group's counters are cleared after the
old group's last step has landed, never before).

Per slot: steps trained, last loss and its moving average, last relative error, the running
mean novelty ||h - h_hat||, skipped steps and resets. Bank-wide totals of skipped steps and
resets survive a slot's reuse.

Usage::

    stats = GroupStats(max_groups=64)
    stats.record(train_result)
    stats.snapshot(slot)   # {"steps": 12, "loss": 0.8, ...}
"""

from __future__ import annotations

import threading

import torch

from .bank import TrainResult
from .fences import StreamFences

_EMA = 0.9  # weight of the old value in loss_mean

FIELDS = ("steps", "loss", "loss_mean", "rel_err", "novelty_sum", "novelty_count", "skipped", "resets")


class GroupStats:
    def __init__(self, max_groups: int, device: torch.device | str = "cpu", streams=None):
        """``streams``: the stream API the trainer uses (None on a CPU: no fences)."""
        self.table = {name: torch.zeros(max_groups, dtype=torch.float64, device=device) for name in FIELDS}
        self.total_skipped = 0
        self.total_resets = 0
        self.lock = threading.Lock()
        self.fences = StreamFences(streams)

    def _write(self, fn) -> None:
        with self.lock:
            self.fences.before_write()
            fn()
            self.fences.after_write()

    def clear(self, slots: list[int]) -> None:
        """Zero the counters of slots handed to a new group."""
        idx = torch.tensor(slots, dtype=torch.int64, device=self.table["steps"].device)

        def zero() -> None:
            for t in self.table.values():
                t.index_fill_(0, idx, 0.0)

        self._write(zero)

    def record(self, res: TrainResult) -> None:
        self._write(lambda: self._record(res))

    def _record(self, res: TrainResult) -> None:
        t, s, ok = self.table, res.slots, res.ok
        ok64 = ok.double()
        loss = torch.where(ok, res.loss, 0).double()
        first = t["steps"].index_select(0, s) == 0
        old_mean = t["loss_mean"].index_select(0, s)
        new_mean = torch.where(first, loss, _EMA * old_mean + (1 - _EMA) * loss)
        t["loss_mean"].index_copy_(0, s, torch.where(ok, new_mean, old_mean))
        t["loss"].index_copy_(0, s, torch.where(ok, loss, t["loss"].index_select(0, s)))
        t["rel_err"].index_copy_(0, s, torch.where(ok, res.rel_err.double(), t["rel_err"].index_select(0, s)))
        t["novelty_sum"].index_add_(0, s, torch.where(ok, res.novelty, 0).double())
        t["novelty_count"].index_add_(0, s, ok64)
        t["steps"].index_add_(0, s, ok64)
        t["skipped"].index_add_(0, s, 1 - ok64)

    def note_reset(self, slots: list[int]) -> None:
        """Count a reset on slots whose step was skipped as non-finite."""
        idx = torch.tensor(slots, dtype=torch.int64, device=self.table["resets"].device)
        ones = torch.ones(len(slots), dtype=torch.float64, device=idx.device)
        self._write(lambda: self.table["resets"].index_add_(0, idx, ones))
        self.total_resets += len(slots)
        self.total_skipped += len(slots)

    def snapshot(self, slot: int) -> dict[str, float | int]:
        """Host copy of one slot's counters (one device read: keep it off the hot path)."""
        with self.lock:
            self.fences.before_read()
            values = torch.stack([t[slot] for t in self.table.values()])
            self.fences.after_read()
        row = dict(zip(self.table, values.tolist()))
        count = row.pop("novelty_count")
        novelty = row.pop("novelty_sum") / count if count else 0.0
        return {
            "steps": int(row["steps"]),
            "loss": row["loss"],
            "loss_mean": row["loss_mean"],
            "rel_err": row["rel_err"],
            "novelty": novelty,
            "skipped": int(row["skipped"]),
            "resets": int(row["resets"]),
        }
