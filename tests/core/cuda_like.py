"""CudaLike: CUDA's stream and caching-allocator semantics on CPU tensors, for tests of the GPU path.

A stand-in for ``CudaStreams`` (``core/streams.py``, the same methods) that is also a
TorchDispatchMode, so it sees every aten op. It models CUDA only, nothing of SGLang:

- the forward stream (current when no other is) runs its ops as the host issues them;
- every other stream is lazy: an op issued on it returns at once, its outputs of the right
  shape but full of garbage, and runs later, in issue order within its stream, when an
  event after it is waited on or synchronised, when the host reads a value on that stream,
  or at random moments between the forward stream's ops: late, and interleaved with work
  issued after it;
- allocations (ops without tensor inputs) and views run at once, as they take no kernel; an
  op whose output shape depends on values first runs its stream's queue (CUDA syncs too);
- the allocator: an op that reads a tensor another stream allocated, not handed over to the
  reading stream (``record_stream``), finds it poisoned (NaN, or an index out of any
  range): what the caching allocator may do once the host drops its tensor, since it then
  gives the memory to the next allocation on the stream that made it.

Usage::

    world = CudaLike(seed=0)
    bank = DistillerBank(cfg, hidden, streams=world)
    with world:
        ...drive the trainer and the bank...
    world.synchronize()
    assert not world.poisoned
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import deque

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes, _get_current_dispatch_mode_stack

_SYNC = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.equal.default, torch.ops.aten.is_nonzero.default}
_FRESH = {torch.ops.aten.lift_fresh.default}  # torch.tensor(...): the host's buffer becomes a tensor here


class Stream:
    def __init__(self, world: CudaLike, name: str, lazy: bool):
        self.world, self.name, self.lazy = world, name, lazy
        self.queue: deque = deque()  # work issued and not run yet
        self.issued = 0  # items issued so far
        self.done = 0  # items run so far

    def __repr__(self) -> str:
        return self.name

    def enqueue(self, work) -> None:
        self.queue.append(work)
        self.issued += 1

    def run(self, until: int | None = None) -> None:
        """Run queued work up to item ``until`` (all of it by default)."""
        until = self.issued if until is None else until
        with self.world.lock, _disable_current_modes(), torch._C._AutoDispatchBelowADInplaceOrView():  # as kernels
            while self.done < until:
                work = self.queue.popleft()
                self.done += 1
                work()

    def wait_event(self, event: Event) -> None:
        """Work issued on this stream from now on runs after ``event``."""
        if event.stream is None:
            return
        if self.lazy:
            with self.world.lock:
                self.enqueue(event.run)
        else:
            event.run()


class Event:
    def __init__(self):
        self.stream, self.mark = None, 0

    def record(self, stream: Stream) -> None:
        self.stream, self.mark = stream, stream.issued

    def run(self) -> None:
        """The work before the event is done (what a stream that waits on it sees)."""
        if self.stream is not None and self.stream.lazy:
            self.stream.run(self.mark)

    def synchronize(self) -> None:
        """The host waits for the event: counted."""
        if self.stream is not None:
            self.stream.world.host_waits += 1
        self.run()


class CudaLike(TorchDispatchMode):
    def __init__(self, seed: int = 0, progress: float = 0.2):
        super().__init__()
        self.lock = threading.RLock()
        self.forward = Stream(self, "forward", lazy=False)
        self.lazy_streams: list[Stream] = []
        self.rng = random.Random(seed)
        self.progress = progress  # chance that a forward op lets the lazy streams run a few ops first
        self.owner: dict[int, Stream] = {}  # storage address -> the stream that allocated it
        self.handed: dict[int, set[Stream]] = {}  # storage address -> streams it was handed over to
        self.poisoned: list[str] = []  # what read a poisoned tensor
        self.host_waits = 0  # event synchronisations: the host waited for the device
        self._local = threading.local()

    # ---- the CudaStreams API ----

    def current(self) -> Stream:
        return getattr(self._local, "stream", self.forward)

    def new_stream(self) -> Stream:
        stream = Stream(self, f"side{len(self.lazy_streams)}", lazy=True)
        self.lazy_streams.append(stream)
        return stream

    @contextlib.contextmanager
    def use(self, stream: Stream):
        outer = self.current()
        self._local.stream = stream
        try:
            with contextlib.nullcontext() if self in _get_current_dispatch_mode_stack() else self:
                yield
        finally:
            self._local.stream = outer

    def new_event(self) -> Event:
        return Event()

    def record_stream(self, tensor: torch.Tensor, stream: Stream) -> None:
        with self.lock:
            self.handed.setdefault(_address(tensor), set()).add(stream)

    def host_copy(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone()

    # ---- the device ----

    def synchronize(self) -> None:
        for stream in self.lazy_streams:
            stream.run()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with self.lock:
            stream = self.current()
            inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            if not stream.lazy:
                if self.rng.random() < self.progress:
                    for side in self.lazy_streams:
                        side.run(min(side.issued, side.done + self.rng.randint(1, 8)))
                return self._run(stream, func, args, kwargs, inputs)
            if func in _SYNC:
                stream.run()
            if not inputs or func.is_view or func in _SYNC or torch.Tag.inplace_view in func.tags:
                return self._run(stream, func, args, kwargs, inputs)
            if func._schema.is_mutable:
                out = _written(func, args, kwargs)
                stream.enqueue(lambda: self._run(stream, func, args, kwargs, inputs))
                return out[0] if len(out) == 1 else tuple(out)
            meta_args, meta_kwargs = pytree.tree_map_only(torch.Tensor, _meta, (args, kwargs))
            try:
                meta = func(*meta_args, **meta_kwargs)
            except (NotImplementedError, RuntimeError):  # the shape depends on values: the host waits
                stream.run()
                return self._run(stream, func, args, kwargs, inputs)
            out = pytree.tree_map_only(torch.Tensor, lambda m: self._allocate(stream, m), meta)
            stream.enqueue(lambda: self._fill(stream, func, args, kwargs, inputs, out))
            return out

    def _run(self, stream: Stream, func, args, kwargs, inputs):
        """Run ``func`` now, on ``stream``'s behalf: its reads checked, its allocations owned."""
        if func not in _FRESH:  # whose input is a buffer the host just made
            self._check(stream, func, inputs)
        out = func(*args, **kwargs)
        read = {_address(t) for t in inputs}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and (func in _FRESH or _address(t) not in read):
                self._own(stream, t)
        return out

    def _fill(self, stream: Stream, func, args, kwargs, inputs, out) -> None:
        """Run a lazy op: compute it and write its placeholders."""
        result = self._run(stream, func, args, kwargs, inputs)
        for dst, src in zip(pytree.tree_leaves(out), pytree.tree_leaves(result)):
            if isinstance(dst, torch.Tensor):
                dst.copy_(src)

    def _allocate(self, stream: Stream, meta: torch.Tensor) -> torch.Tensor:
        out = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype)
        _poison(out)  # garbage until the op runs
        self._own(stream, out)
        return out

    def _own(self, stream: Stream, tensor: torch.Tensor) -> None:
        address = _address(tensor)
        if address:
            self.owner[address] = stream
            self.handed.pop(address, None)

    def _check(self, stream: Stream, func, inputs) -> None:
        for t in inputs:
            address = _address(t)
            owner = self.owner.get(address)
            if owner is not None and owner is not stream and stream not in self.handed.get(address, ()):
                self.poisoned.append(f"{func} on {stream} read a {tuple(t.shape)} {t.dtype} tensor made on {owner}")
                _poison(t)


def _address(t: torch.Tensor) -> int:
    """Where a tensor's storage starts (0 for an empty or meta one)."""
    if t.device.type == "meta" or t.untyped_storage().nbytes() == 0:
        return 0
    return t.untyped_storage().data_ptr()


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _poison(t: torch.Tensor) -> None:
    """Fill with what reused memory might hold: NaN, or an index beyond any table."""
    with torch.no_grad():
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype == torch.bool:
            t.fill_(True)
        else:
            t.fill_(2**30 if t.dtype in (torch.int32, torch.int64) else 0)


def _written(func, args, kwargs) -> list[torch.Tensor]:
    """The arguments an in-place or out= op writes: what it returns."""
    out = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            out.append(kwargs[arg.name] if arg.name in kwargs else args[i])
    return out
