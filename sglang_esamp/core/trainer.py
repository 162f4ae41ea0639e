"""AsyncTrainer: trains the distiller bank off the sampling path, with bounded staleness.

Each decode step calls ``predict`` (before sampling) and ``submit`` (after it). Training
step k is the k-th submitted batch. ``predict`` guarantees that at least
``submitted - staleness`` steps have finished; it waits only when the trainer has fallen
further behind. With ``staleness=0`` every prediction sees every earlier step.

Modes:

- ``thread``: a background worker runs the steps in order. On CUDA it issues them on a side
  stream and links the streams with events, so neither side waits on the host. Every tensor
  a step reads that the caller made (its rows and every tensor of its layout) is handed over
  to the side stream in one call (``_hand_over``), so the caching allocator cannot reuse
  its memory while the step still runs.
- ``inline``: ``submit`` runs the step at once, in the caller (the deferred step after
  sampling). No overlap, but on a 2-core CPU it was faster than the worker, which competes
  with the model's own threads (docs/design.md).
- ``auto``: ``thread`` on CUDA, ``inline`` elsewhere.

With ``lockstep`` (tensor-parallel ranks, which must predict alike), the worker runs a step
only once a prediction (or ``drain``) asks for it: a prediction after s submitted steps sees
exactly s - ``staleness`` of them, a function of the step count rather than of the worker's
timing. Its GPU work still overlaps the forward; the host's issue of it waits for the
prediction.

With ``every`` k > 1, ``submit`` holds each batch's rows until it has k batches, then
hands them in as one step (``BatchLayout.stacked``): a group's loss is the mean over all
its rows of the k decode steps. ``drain`` and ``retire`` train what is held first, so a
slot is never reset with rows of its old group still waiting.

When a new group moves into a used slot, ``retire`` waits only until the worker has issued
the old group's steps (usually long done: slots are reused least recently used first); the
bank's fences order the reset after them on the device, with no host sync.

With a ``WarmBase`` (``--esamp-init calibrated``) every step's rows also feed the base's
reservoir, and ``idle`` runs the steps the base owes: inline, for a bounded slice of time;
in the worker, a few at a time behind the groups' steps, on the same stream. The bank gets
the base's weights every ``PUBLISH_EVERY`` steps and when its owed steps are done.

A group whose step came out non-finite kept its weights (``DistillerBank``); it is
re-initialised and counted when the trainer reads the step's flags, one step later or at
``drain``, so that no step waits on the host for its own result. A step
that raises (out of memory on a GPU, say) never reaches the sampling side: its groups are
re-initialised, ``failures`` counts it, one log line carries the traceback, and the
trainer goes on with the next step. ESamp is an optimisation of sampling, never a reason to
fail a request.

Usage::

    trainer = AsyncTrainer(bank, stats, staleness=1, mode="thread")
    h_hat = trainer.predict(layout, h1)
    ...sample...
    trainer.submit(layout, h1, hL)
    trainer.close()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque

import torch

from .bank import DistillerBank
from .layout import BatchLayout
from .stats import GroupStats
from .warm_base import WarmBase

logger = logging.getLogger(__name__)

TRACE_EVERY = 10.0  # seconds between two logged tracebacks of failing steps
PUBLISH_EVERY = 50  # base steps between two hand-overs of its weights to the bank
PROGRESS_EVERY = 100  # first-fit steps between two progress lines in the log
BASE_CHUNK = 8  # base steps per work item of the worker
_BASE = object()  # the worker's work item for base steps


class AsyncTrainer:
    def __init__(
        self, bank: DistillerBank, stats: GroupStats, staleness: int, mode: str = "thread",
        warm: WarmBase | None = None, on_fitted=None, every: int = 1, lockstep: bool = False,
    ):
        self.bank, self.stats = bank, stats
        self.warm = warm
        self.on_fitted = on_fitted  # called with the WarmBase, in the trainer, when its owed steps are done
        self.base_failures = 0  # base steps that raised
        self._fit_clock = None  # (steps, time) when the base's first fit began
        self.staleness = staleness
        self.every = every  # decode batches per training step
        self.lockstep = lockstep
        self._allowed = 0  # in lockstep: steps the worker may have run
        self._held: list[tuple[BatchLayout, torch.Tensor, torch.Tensor]] = []  # batches waiting for their step
        self._verdict = None  # (slots, (g,) ok on the host, copy event): the last step's, not yet read
        self.mode = ("thread" if bank.device.type == "cuda" else "inline") if mode == "auto" else mode
        self.submitted = 0  # steps handed in
        self.finished = 0  # steps done (on CUDA: issued on the side stream), failed ones included
        self.failures = 0  # steps that raised
        self.waits = 0  # predictions that had to wait for training (the staleness bound)
        self.step_seconds: deque[float] = deque(maxlen=4096)  # host time of recent steps, for metrics
        self._last_trace = -float("inf")  # when a failure's traceback was last logged
        self._cond = threading.Condition()
        self._queue: deque = deque()
        self._slot_last: dict[int, int] = {}  # slot -> the newest submitted step that trains it
        self._closed = False
        self._streams = bank.streams  # the CUDA stream API, or None on a CPU
        self._stream = self._streams.new_stream() if self._streams is not None else None  # the side stream
        self._worker = None
        if self.mode == "thread":
            self._worker = threading.Thread(target=self._run, name="esamp-trainer", daemon=True)
            self._worker.start()

    def predict(self, layout: BatchLayout, src: torch.Tensor) -> torch.Tensor:
        """(M, D) predictions for ``layout.rows`` from weights at most ``staleness`` steps old
        (exactly that old in lockstep)."""
        self._allow(self.submitted - self.staleness)
        self.wait(self.submitted - self.staleness)
        return self.bank.predict(layout, src)

    def submit(self, layout: BatchLayout, src: torch.Tensor, tgt: torch.Tensor, repeat: int = 0) -> None:
        """Hand in one batch's rows for training (every ``every``-th call queues a step;
        ``repeat`` > 0: that many steps of their own on these rows at once, as a prompt fit's,
        whose rows the base's reservoir takes once). The tensors are copied: callers may
        reuse theirs."""
        if layout.is_empty:
            return
        src, tgt = src.detach().clone(), tgt.detach().clone()
        if repeat:
            for i in range(repeat):
                self._queue_step(layout, src, tgt, feed=i == 0)
            return
        if self.every > 1:
            self._held.append((layout, src, tgt))
            if len(self._held) < self.every:
                return
            layout, src, tgt = self._release()
        self._queue_step(layout, src, tgt)

    def _release(self) -> tuple[BatchLayout, torch.Tensor, torch.Tensor]:
        """The held batches as one: their rows stacked, in order."""
        held, self._held = self._held, []
        if len(held) == 1:
            return held[0]
        layout = BatchLayout.stacked([lay for lay, _, _ in held], self.bank.device)
        return layout, torch.cat([s for _, s, _ in held]), torch.cat([t for _, _, t in held])

    def _queue_step(self, layout: BatchLayout, src: torch.Tensor, tgt: torch.Tensor, feed: bool = True) -> None:
        """Queue (or, inline, run) one step; ``feed``: its rows also go to the base's reservoir."""
        item = (*self._hand_over(layout, src, tgt), feed)
        with self._cond:
            self.submitted += 1
            for slot in layout.slot_list:
                self._slot_last[slot] = self.submitted  # the newest step that trains this slot
            if self.mode == "thread":
                self._queue.append(item)
                self._cond.notify_all()
                return
        self._step(item)

    def wait(self, step: int) -> None:
        """Block until at least ``step`` steps have finished."""
        with self._cond:
            self.waits += self.finished < step
            while self.finished < step and (self._worker is None or self._worker.is_alive()):
                self._cond.wait(timeout=1.0)

    def idle(self, budget: float, steps: int | None = None) -> bool:
        """Run steps the warm base owes: inline for about ``budget`` seconds, or a few in the
        worker once its queue is empty; with ``steps``, exactly that many (at most), after
        the worker's queue, so that replicas that must agree (tensor-parallel ranks) take
        the same steps at the same point. True while the base has owed steps (the caller
        then skips its idle sleep)."""
        warm = self.warm
        if warm is None or not warm.owed:
            return False
        if steps is not None:
            self.drain()
            self._base_steps(steps)
            return True
        if self.mode == "thread":
            with self._cond:
                if not self._queue:
                    self._queue.append(_BASE)
                    self._cond.notify_all()
            return True
        deadline = time.perf_counter() + budget
        while warm.owed and time.perf_counter() < deadline:
            self._base_steps(1)
        return True

    def take_step_seconds(self) -> list[float]:
        """The step times recorded since the last call (and forget them)."""
        out = []
        while self.step_seconds:
            out.append(self.step_seconds.popleft())
        return out

    def retire(self, slot: int) -> None:
        """``slot``'s group leaves and a new one moves in: every step of the old group is issued
        before this returns (held rows are queued first), so the reset that follows lands after
        them on the device (the bank's fences order it), and a verdict still pending for the
        old group no longer resets the slot. The host waits only for the worker to issue
        those steps (none, when the slot's last step is long done), never for the device."""
        if any(slot in layout.slot_list for layout, _, _ in self._held):
            self._queue_step(*self._release())
        last = self._slot_last.pop(slot, 0)
        self._allow(last)
        self.wait(last)
        with self._cond:
            if self._verdict is not None and slot in self._verdict[0]:
                slots, ok, ready = self._verdict
                self._verdict = (tuple(-1 if s == slot else s for s in slots), ok, ready)  # -1: never reset

    def drain(self) -> None:
        """Train the held rows, wait for every step, and re-initialise a group whose last step
        was not finite."""
        if self._held:
            self._queue_step(*self._release())
        self._allow(self.submitted)
        self.wait(self.submitted)
        self._reset_failed()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join()

    def _hand_over(self, layout: BatchLayout, src: torch.Tensor, tgt: torch.Tensor) -> tuple:
        """A step's work item: everything the side stream will read that this stream made goes
        through here, kept alive for the side stream, with the event it waits on before reading."""
        if self._streams is not None:
            self.bank.fences.hand_over([*layout.tensors(), src, tgt], self._stream)
        return layout, src, tgt, self._record_ready()

    def _record_ready(self):
        """On CUDA, an event recorded on the current stream (another stream waits on it before
        reading what was issued here)."""
        if self._streams is None:
            return None
        event = self._streams.new_event()
        event.record(self._streams.current())
        return event

    def _on_side(self):
        return self._streams.use(self._stream) if self._streams is not None else contextlib.nullcontext()

    def _allow(self, steps: int) -> None:
        """In lockstep: let the worker run up to ``steps`` steps."""
        if self.lockstep:
            with self._cond:
                self._allowed = max(self._allowed, steps)
                self._cond.notify_all()

    def _runnable(self) -> bool:
        """Work is queued and, in lockstep, its step has been asked for (call under the lock)."""
        if not self._queue:
            return False
        return not self.lockstep or self._queue[0] is _BASE or self.finished < self._allowed

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._runnable() and not self._closed:
                    self._cond.wait()
                if not self._runnable():
                    return
                item = self._queue.popleft()
            if item is _BASE:
                self._base_steps(BASE_CHUNK)
            else:
                self._step(item)

    def _step(self, item) -> None:
        layout, src, tgt, ready, feed = item
        start = time.perf_counter()
        try:
            with self._on_side():
                if ready is not None:
                    self._stream.wait_event(ready)
                self._train(layout, src, tgt, feed)
        except Exception:
            self._fail(list(layout.slot_list))
        finally:
            self.step_seconds.append(time.perf_counter() - start)
            with self._cond:
                self.finished += 1
                self._cond.notify_all()

    def _base_steps(self, k: int) -> None:
        """Up to ``k`` owed base steps. One that raises drops the base's owed steps (the next
        rows earn new ones); the groups never notice."""
        warm = self.warm
        before = warm.steps
        try:
            with self._on_side():
                for _ in range(k):
                    if not warm.owed:
                        break
                    if not warm.fitted and self._fit_clock is None:
                        self._fit_clock = (warm.steps, time.perf_counter())
                        logger.info("ESamp base distiller: first fit begins, %d steps on %d rows, in idle time", warm.owed,
                                    warm.reservoir.filled)
                    warm.step()
                    if not warm.fitted and warm.steps % PROGRESS_EVERY == 0:
                        self._log_fit(warm)
                    if warm.owed == 0 or warm.steps % PUBLISH_EVERY == 0:
                        self.bank.set_base(warm.snapshot())
                if warm.owed == 0 and warm.steps > before and self.on_fitted is not None:  # once, by the call that finished
                    self.on_fitted(warm)
        except Exception:
            warm.owed = 0
            self.base_failures += 1
            logger.exception("ESamp base distiller step failed (%d so far)", self.base_failures)

    def _log_fit(self, warm: WarmBase) -> None:
        start, t0 = self._fit_clock
        seconds = time.perf_counter() - t0
        left = seconds / max(1, warm.steps - start) * warm.owed
        logger.info("ESamp base distiller: first fit %d/%d steps, about %.0f s of idle time left", warm.steps,
                    warm.steps + warm.owed, left)

    def _fail(self, slots: list[int]) -> None:
        """A step raised: count it, log it (the traceback at most every ``TRACE_EVERY``
        seconds), and re-initialise its groups, whose weights it may have left half-written."""
        self.failures += 1
        now = time.monotonic()
        if now - self._last_trace >= TRACE_EVERY:
            self._last_trace = now
            logger.exception("ESamp distiller step failed (%d so far); re-initialising slots %s", self.failures, slots)
        else:
            logger.warning("ESamp distiller step failed (%d so far); re-initialising slots %s", self.failures, slots)
        try:
            self.bank.reset(slots)
            self.stats.note_reset(slots)
        except Exception:
            logger.exception("ESamp could not re-initialise slots %s", slots)

    def _train(self, layout: BatchLayout, src: torch.Tensor, tgt: torch.Tensor, feed: bool) -> None:
        result = self.bank.train_step(layout, src, tgt)
        self.stats.record(result)
        if self.warm is not None and feed:
            self.warm.add(src, tgt)
        self._reset_failed()  # the previous step's verdict: long landed by now
        flags = result.ok  # (g,) on the host already, on a CPU
        if self._streams is not None:  # a host copy, read a step later: nothing waits for it now
            flags = self._streams.host_copy(flags)
        with self._cond:
            self._verdict = (result.slot_list, flags, self._record_ready())  # ok's order: by size bucket

    def _reset_failed(self) -> None:
        """Re-initialise the groups whose last step came out non-finite. The step's ``ok``
        flags are read one step late (or at ``drain``), so no step waits on the host for
        its own result; a non-finite step left its group's weights as they were."""
        with self._cond:
            verdict, self._verdict = self._verdict, None
        if verdict is None:
            return
        slots, ok, ready = verdict
        if ready is not None:
            ready.synchronize()  # the copy of the flags, issued a step ago
        bad = [s for s, fine in zip(slots, ok.tolist()) if not fine and s >= 0]
        if bad:
            logger.warning("ESamp distiller step was not finite for slots %s; re-initialising them", bad)
            self.bank.reset(bad)
            self.stats.note_reset(bad)
