"""StreamFences: the CUDA events that order the distiller bank's reads and writes across
streams, with no host synchronisation.

Who touches the bank, and on which stream:

- reads (a step's prediction, a reset's copy of the base) run on the stream current at
  the call: SGLang's forward stream for predictions (the overlap scheduler runs forward and
  sampling there, not on the stream that built the bank);
- writes (a training step, which reads and updates its rows in place, a reset, a new base)
  run on the trainer's side stream or on the scheduler's.

The rules, each an event wait on the stream about to act:

- a read waits for the newest write, whatever stream issued it;
- a write waits for the newest read of every other stream that has read, and for the
  newest write (so a reset lands after the training step still in flight for its slot).

Work on one stream is ordered already, so a stream never waits for its own events. On the
CPU every call is a no-op. The stream API is injected (``streams.py``), so a CPU test can
drive the rules with fake streams and events.

``hand_over`` is the one way a tensor made on one stream reaches another: every tensor the
trainer's side stream reads that the forward stream made goes through it (the trainer
hands over a step's rows and every tensor of its layout at once).

Usage::

    fences = StreamFences(CudaStreams.for_device(device))
    with lock:
        fences.before_read(); out = params.index_select(0, slots); fences.after_read()
    with lock:
        fences.before_write(); params.index_copy_(0, slots, new); fences.after_write()
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class StreamFences:
    def __init__(self, streams=None):
        """``streams``: the stream API (``CudaStreams`` or a stand-in): ``current()`` returns the
        stream work is issued on now (streams compare equal when they are the same stream),
        ``new_event()`` a fresh event with ``record(stream)``, ``record_stream(tensor, stream)``
        keeps a tensor's memory for a stream. None: no streams, every call a no-op."""
        self.enabled = streams is not None
        self.streams = streams
        self._last_write = None  # (stream, the event after the newest write)
        self._last_reads: dict = {}  # stream -> the event after its newest read

    def _current(self):
        return self.streams.current()

    def _mark(self):
        event = self.streams.new_event()
        event.record(self._current())
        return event

    def _after_last_write(self, stream) -> None:
        if self._last_write is not None and self._last_write[0] != stream:
            stream.wait_event(self._last_write[1])

    def before_read(self) -> None:
        if self.enabled:
            self._after_last_write(self._current())

    def after_read(self) -> None:
        if self.enabled:
            self._last_reads[self._current()] = self._mark()

    def before_write(self) -> None:
        if not self.enabled:
            return
        stream = self._current()
        for reader, event in self._last_reads.items():
            if reader != stream:
                stream.wait_event(event)
        self._after_last_write(stream)

    def after_write(self) -> None:
        if self.enabled:
            self._last_write = (self._current(), self._mark())

    def hand_over(self, tensors: Iterable[torch.Tensor], stream=None) -> None:
        """Tensors made on one stream and used on ``stream`` (default: the current one): the
        caching allocator must not reuse their memory before that stream's work on them is done."""
        if self.enabled:
            stream = self._current() if stream is None else stream
            for t in tensors:
                self.streams.record_stream(t, stream)
