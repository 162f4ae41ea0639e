"""CudaStreams: the CUDA stream API of the trainer and the bank, in one object that can be injected.

Everything the core does with streams goes through it: the stream work is issued on now,
a new stream, issuing work on one, events, keeping a tensor's memory for a stream that reads
it (``record_stream``) and a host copy that lands without a wait. On a CPU there are no
streams: ``for_device`` gives None and the core runs everything in the caller. A test can
pass a stand-in with the same methods that gives CPU tensors CUDA's semantics
(tests/core/cuda_like.py).

Usage::

    streams = CudaStreams.for_device(device)   # None on a CPU
    side = streams.new_stream()
    with streams.use(side):
        ...                                    # issued on side; the host goes on at once
"""

from __future__ import annotations

import torch


class CudaStreams:
    def __init__(self, device: torch.device):
        self.device = device

    @classmethod
    def for_device(cls, device: torch.device) -> CudaStreams | None:
        return cls(device) if device.type == "cuda" else None

    def current(self):
        return torch.cuda.current_stream(self.device)

    def new_stream(self):
        return torch.cuda.Stream(self.device)

    def use(self, stream):
        """A context in which work is issued on ``stream``."""
        return torch.cuda.stream(stream)

    def new_event(self):
        return torch.cuda.Event()

    def record_stream(self, tensor: torch.Tensor, stream) -> None:
        """The caching allocator keeps ``tensor``'s memory until ``stream``'s work issued so far is done."""
        tensor.record_stream(stream)

    def host_copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """A pinned host copy, issued on the current stream: read it after an event recorded there."""
        return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor, non_blocking=True)
