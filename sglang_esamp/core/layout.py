"""BatchLayout: how the rows of one batch map onto distiller groups.

A decode batch mixes rows of many groups in any order. The distiller bank works on packed
tensors (g, R, D): one block per live group, R = the largest group's row count, padding
masked out. The layout is computed on the host from the slot list that the scheduler already
holds as Python ints, then copied to the device once, so nothing here reads device memory.

One large group must not make every small one pay its row count (one request with n = 256
beside 31 single-row groups would pack 32 x 256 rows for 287 real ones), so ``split``
sorts the groups into buckets of row counts up to a power of two, and a bucket's groups
into runs of slots whose ``window`` (every slot from the run's first to its last, idle ones
included) pads at most twice their rows; it gives one layout per run. The packed rows of a
step, on prediction and training alike, are at most twice its real rows (two n = 256
groups at slots 0 and 31 make two runs, not one window of 32 x 256 rows).

Usage::

    layout = BatchLayout.from_slots([3, 3, -1, 7], device)   # row 2 has no distiller
    packed = layout.pack(hidden)                             # (2, 2, D)
    rows = layout.unpack(packed)                             # (3, D), for layout.rows
    for part, positions in layout.split: ...                 # positions: (m,) into layout.rows
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    lo: int  # first slot of the range
    hi: int  # one past the last
    layout: BatchLayout  # blocks for every slot of [lo, hi)
    live: torch.Tensor  # (g,) int64: the original groups' blocks in it (slot - lo)


@dataclass(frozen=True)
class BatchLayout:
    num_rows: int  # rows in the batch, with or without a slot
    max_rows: int  # R: rows of the largest group
    slots: torch.Tensor  # (g,) int64: bank slot of each live group
    slot_list: tuple[int, ...]  # the same, on the host
    rows: torch.Tensor  # (M,) int64: batch rows that have a slot
    row_list: tuple[int, ...]  # the same, on the host
    row_group: torch.Tensor  # (M,) int64: index into slots
    row_group_list: tuple[int, ...]  # the same, on the host
    row_pos: torch.Tensor  # (M,) int64: position inside its group's block
    group_rows: torch.Tensor  # (g,) float32: rows per group, for the mean loss
    group_row_list: tuple[int, ...]  # the same, on the host

    @classmethod
    def from_slots(cls, row_slots: Sequence[int], device: torch.device | str = "cpu") -> BatchLayout:
        """``row_slots[i]`` is row i's slot, or a negative number for a row without one."""
        order: dict[int, int] = {}
        counts: list[int] = []
        rows, row_group, row_pos = [], [], []
        for row, slot in enumerate(row_slots):
            if slot < 0:
                continue
            group = order.setdefault(slot, len(order))
            if group == len(counts):
                counts.append(0)
            rows.append(row)
            row_group.append(group)
            row_pos.append(counts[group])
            counts[group] += 1

        def to_dev(values: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

        return cls(
            num_rows=len(row_slots),
            max_rows=max(counts, default=0),
            slots=to_dev(list(order), torch.int64),
            slot_list=tuple(order),
            rows=to_dev(rows, torch.int64),
            row_list=tuple(rows),
            row_group=to_dev(row_group, torch.int64),
            row_group_list=tuple(row_group),
            row_pos=to_dev(row_pos, torch.int64),
            group_rows=to_dev(counts, torch.float32),
            group_row_list=tuple(counts),
        )

    @classmethod
    def stacked(cls, layouts: Sequence[BatchLayout], device: torch.device | str = "cpu") -> BatchLayout:
        """The rows of several batches one after another, as their tensors concatenated in
        the same order: a group in several of them has all those rows in one block."""
        row_slots: list[int] = []
        for layout in layouts:
            slots = [-1] * layout.num_rows
            for row, group in zip(layout.row_list, layout.row_group_list):
                slots[row] = layout.slot_list[group]
            row_slots += slots
        return cls.from_slots(row_slots, device)

    @functools.cached_property
    def split(self) -> tuple[tuple[BatchLayout, torch.Tensor | None], ...]:
        """(layout, positions) per run of groups (``_runs``); positions: (m,) indices into
        ``rows`` of that layout's rows, None when there is one run (the layout itself)."""
        run = self._runs()
        if len(set(run.values())) <= 1:  # the common case: no per-row work
            return ((self, None),)
        slot_of_row = dict.fromkeys(range(self.num_rows), -1)
        for row, g in zip(self.row_list, self.row_group_list):
            slot_of_row[row] = self.slot_list[g]
        position = {row: i for i, row in enumerate(self.row_list)}
        device = self.rows.device
        parts = []
        for key in sorted(set(run.values())):
            part = BatchLayout.from_slots([s if s >= 0 and run[s] == key else -1 for s in slot_of_row.values()], device)
            parts.append((part, torch.tensor([position[r] for r in part.row_list], dtype=torch.int64).to(device, non_blocking=True)))
        return tuple(parts)

    def _runs(self) -> dict[int, tuple[int, int]]:
        """slot -> (bucket, first slot of its run). A bucket holds the groups whose row counts
        round up to the same power of two, so each has more than half the rows of its largest,
        R. A run grows by the bucket's next slot while its window of w slots pads at most
        twice its rows (w R <= 2 rows): idle slots between live ones cost at most that."""
        size = dict(zip(self.slot_list, self.group_row_list))
        bucket = {s: (n - 1).bit_length() for s, n in size.items()}  # ceil(log2 n)
        run: dict[int, tuple[int, int]] = {}
        for b in set(bucket.values()):
            slots = sorted(s for s in size if bucket[s] == b)
            top = max(size[s] for s in slots)  # R of the bucket, at least that of any of its runs
            first, rows = slots[0], 0
            for s in slots:
                if (s + 1 - first) * top > 2 * (rows + size[s]):
                    first, rows = s, 0
                rows += size[s]
                run[s] = (b, first)
        return run

    @functools.cached_property
    def window(self) -> Window:
        """This layout re-indexed over the contiguous slot range it spans, so the bank can
        work on views of that range instead of gathering the slots: block i is slot lo + i,
        and a slot of the range without rows here is an empty block (zero rows)."""
        lo, hi = min(self.slot_list), max(self.slot_list) + 1
        counts = [0] * (hi - lo)
        for s, n in zip(self.slot_list, self.group_row_list):
            counts[s - lo] = n
        device = self.rows.device
        spread = BatchLayout(
            num_rows=self.num_rows, max_rows=self.max_rows,
            slots=torch.arange(lo, hi, device=device), slot_list=tuple(range(lo, hi)),
            rows=self.rows, row_list=self.row_list,
            row_group=self.slots[self.row_group] - lo, row_group_list=tuple(self.slot_list[g] - lo for g in self.row_group_list),
            row_pos=self.row_pos,
            group_rows=torch.tensor(counts, dtype=torch.float32).to(device, non_blocking=True), group_row_list=tuple(counts),
        )
        return Window(lo, hi, spread, self.slots - lo)

    def tensors(self) -> list[torch.Tensor]:
        """Every device tensor of this layout and of the parts the bank works on (``split`` and
        each part's ``window``), those parts computed now: what must be handed over to a
        stream that did not make the layout (``StreamFences.hand_over``)."""
        for part, _ in self.split:
            part.window  # noqa: B018 (computed here, on the stream that made the layout)
        found: dict[int, torch.Tensor] = {}
        _collect(self, found, set())
        return list(found.values())

    @property
    def num_groups(self) -> int:
        return len(self.slot_list)

    @property
    def is_empty(self) -> bool:
        return not self.slot_list

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(num_rows, D) batch tensor -> (g, R, D), zero padding."""
        out = x.new_zeros(self.num_groups, self.max_rows, x.shape[-1])
        out[self.row_group, self.row_pos] = x[self.rows]
        return out

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(g, R, D) -> (M, D) in the order of ``rows``."""
        return packed[self.row_group, self.row_pos]

    def mask(self) -> torch.Tensor:
        """(g, R) float: 1 where a real row sits, 0 on padding."""
        out = torch.zeros(self.num_groups, self.max_rows, device=self.rows.device)
        out[self.row_group, self.row_pos] = 1.0
        return out


def _collect(value, found: dict[int, torch.Tensor], seen: set[int]) -> None:
    """The tensors reachable from ``value`` through layouts, windows (their fields and cached
    parts alike) and tuples, into ``found`` (by id)."""
    if isinstance(value, torch.Tensor):
        found[id(value)] = value
    elif isinstance(value, (tuple, list)):
        for item in value:
            _collect(item, found, seen)
    elif isinstance(value, (BatchLayout, Window)) and id(value) not in seen:
        seen.add(id(value))
        for item in vars(value).values():
            _collect(item, found, seen)
