"""GroupTable: which exploration group owns which distiller slot.

A group (the n samples of one request, or every request naming one ``explore_group``) holds
a slot while any of its requests runs. When its last request ends, the slot turns idle: the
group keeps its distiller for ``ttl`` seconds in case more of its requests arrive, then the
slot is freed. When every slot is taken, the least recently used idle group is evicted. When
every slot is busy, the group gets no slot: its requests run untilted and ``denied`` counts
them (a caller may try again later). A slot is never shared by two groups (``check``).

Pure host-side bookkeeping; the caller resets the distiller of a slot handed out ``fresh``.

Usage::

    table = GroupTable(max_groups=64, ttl=30.0)
    slot, fresh = table.acquire("req-group-1")   # (slot, True) the first time
    table.release("req-group-1")                 # idle now; freed after the ttl
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Entry:
    slot: int
    refs: int
    idle_since: float


class GroupTable:
    def __init__(self, max_groups: int, ttl: float, clock=time.monotonic):
        self.max_groups = max_groups
        self.ttl = ttl
        self.clock = clock
        self.entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self.free = list(range(max_groups))  # a heap: the lowest free slot goes first, so live slots stay packed
        self.evictions = 0
        self.denied = 0

    @property
    def live(self) -> int:
        """Groups with at least one running request."""
        return sum(1 for e in self.entries.values() if e.refs > 0)

    def acquire(self, key: str, count_denial: bool = True) -> tuple[int | None, bool]:
        """One more request of group ``key``. Returns (slot, fresh) or (None, False) if denied
        (counted in ``denied`` unless ``count_denial`` is False: a retry of a denied request)."""
        self.expire()
        entry = self.entries.get(key)
        if entry is not None:
            entry.refs += 1
            self.entries.move_to_end(key)
            return entry.slot, False
        slot = heapq.heappop(self.free) if self.free else self._evict_idle()
        if slot is None:
            self.denied += count_denial
            return None, False
        self.entries[key] = _Entry(slot, 1, 0.0)
        return slot, True

    def release(self, key: str) -> None:
        """One request of group ``key`` finished or was aborted."""
        entry = self.entries.get(key)
        if entry is None or entry.refs == 0:
            return
        entry.refs -= 1
        if entry.refs == 0:
            entry.idle_since = self.clock()
            self.entries.move_to_end(key)
        self.expire()

    def slot_of(self, key: str) -> int | None:
        entry = self.entries.get(key)
        return None if entry is None else entry.slot

    def expire(self) -> None:
        """Free the slots of groups idle for longer than the ttl."""
        now = self.clock()
        for key in [k for k, e in self.entries.items() if e.refs == 0 and now - e.idle_since >= self.ttl]:
            heapq.heappush(self.free, self.entries.pop(key).slot)

    def check(self) -> None:
        """Raise if the table is inconsistent: a slot held twice or lost, or a negative count."""
        held = [e.slot for e in self.entries.values()]
        if sorted(held + self.free) != list(range(self.max_groups)) or any(e.refs < 0 for e in self.entries.values()):
            raise AssertionError(f"group table inconsistent: held {held}, free {self.free}")

    def _evict_idle(self) -> int | None:
        for key, entry in self.entries.items():  # oldest first
            if entry.refs == 0:
                del self.entries[key]
                self.evictions += 1
                return entry.slot
        return None
