"""RowReservoir: the newest (shallow, deep) state pairs of a server's decode rows, on the device.

A ring buffer with a fixed footprint, sized at start; the base distiller (``warm_base.py``)
draws its minibatches from it. Row counts are kept on the host, so neither writing nor
sampling reads the device.

Usage::

    res = RowReservoir.sized(hidden=576, device="cpu", dtype=torch.bfloat16, least=2048)
    res.add(h1, h)                     # (m, D) each
    src, tgt = res.sample(512, gen)    # (512, D) each, float32
"""

from __future__ import annotations

import torch

MAX_ROWS = 8192
MAX_BYTES = 64 * 2**20  # at most this much device memory, unless the caller's ``least`` rows need more


class RowReservoir:
    def __init__(self, capacity: int, hidden: int, device: torch.device | str, dtype: torch.dtype):
        if capacity < 1:
            raise ValueError(f"a reservoir needs at least one row; got {capacity}")
        self.src = torch.zeros(capacity, hidden, device=device, dtype=dtype)  # (C, D)
        self.tgt = torch.zeros_like(self.src)  # (C, D)
        self.capacity = capacity
        self.filled = 0  # rows held
        self.added = 0  # rows ever added
        self._next = 0  # where the next row goes

    @staticmethod
    def _row_bytes(hidden: int, dtype: torch.dtype) -> int:
        return 2 * hidden * torch.empty(0, dtype=dtype).element_size()  # a (src, tgt) pair

    @classmethod
    def _capacity(cls, hidden: int, dtype: torch.dtype, least: int) -> int:
        return max(1, least, min(MAX_ROWS, MAX_BYTES // cls._row_bytes(hidden, dtype)))

    @classmethod
    def sized(cls, hidden: int, device: torch.device | str, dtype: torch.dtype, least: int = 1) -> RowReservoir:
        """``MAX_ROWS`` rows, or fewer where they would pass ``MAX_BYTES``, but never fewer than
        ``least`` (the rows its reader needs at once: a base's first fit)."""
        return cls(cls._capacity(hidden, dtype, least), hidden, device, dtype)

    @classmethod
    def bytes_for(cls, hidden: int, dtype: torch.dtype, least: int = 1) -> int:
        """The device memory ``sized`` takes for this shape."""
        return cls._capacity(hidden, dtype, least) * cls._row_bytes(hidden, dtype)

    @property
    def nbytes(self) -> int:
        return self.src.nbytes + self.tgt.nbytes

    def add(self, src: torch.Tensor, tgt: torch.Tensor) -> None:
        """Keep these rows (the last ``capacity`` of them), overwriting the oldest. src, tgt: (m, D)."""
        m = min(src.shape[0], self.capacity)
        src, tgt = src[src.shape[0] - m :], tgt[tgt.shape[0] - m :]
        head = min(m, self.capacity - self._next)  # rows before the ring wraps
        self.src[self._next : self._next + head].copy_(src[:head])
        self.tgt[self._next : self._next + head].copy_(tgt[:head])
        self.src[: m - head].copy_(src[head:])
        self.tgt[: m - head].copy_(tgt[head:])
        self._next = (self._next + m) % self.capacity
        self.filled = min(self.capacity, self.filled + m)
        self.added += m

    def sample(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``m`` rows drawn uniformly, with replacement, from those held: (m, D) each in float32."""
        if self.filled == 0:
            raise ValueError("the reservoir is empty")
        idx = torch.randint(0, self.filled, (m,), device=self.src.device, generator=generator)
        return self.src[idx].float(), self.tgt[idx].float()
