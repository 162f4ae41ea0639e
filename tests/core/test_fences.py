"""StreamFences and the bank's use of them, driven on the CPU with fake streams and events:
every wait that CUDA would need is issued, on the right stream, and no other."""

import torch

from sglang_esamp.core import BatchLayout, DistillerBank, ESampConfig
from sglang_esamp.core.fences import StreamFences
from sglang_esamp.core.streams import CudaStreams


class Streams:
    """Fake streams named by letter; ``log`` records (stream, "waits", event) and the events'
    records as (stream, "records", event)."""

    def __init__(self):
        self.now, self.log, self.count = "forward", [], 0

    def current(self):
        return Stream(self, self.now)

    def new_event(self):
        return Event(self)


class Stream:
    def __init__(self, world, name):
        self.world, self.name = world, name

    def __eq__(self, other):
        return isinstance(other, Stream) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def wait_event(self, event):
        self.world.log.append((self.name, "waits", event.label))


class Event:
    def __init__(self, world):
        self.world, self.label = world, None

    def record(self, stream):
        self.world.count += 1
        self.label = f"{stream.name}{self.world.count}"
        self.world.log.append((stream.name, "records", self.label))


def fences_on(world):
    return StreamFences(world)


def waits(world):
    return [(s, e) for s, kind, e in world.log if kind == "waits"]


def test_reads_wait_for_the_newest_write_and_writes_for_other_streams_reads():
    w = Streams()
    f = fences_on(w)
    f.before_read(), f.after_read()  # forward reads: nothing written yet
    assert waits(w) == []
    w.now = "side"
    f.before_write(), f.after_write()  # the trainer writes after the forward's read
    assert waits(w) == [("side", "forward1")]
    w.log.clear()
    w.now = "forward"
    f.before_read(), f.after_read()  # the next read sees that write
    assert waits(w) == [("forward", "side2")]
    w.log.clear()
    w.now = "scheduler"
    f.before_write(), f.after_write()  # a reset: after the forward's read and the step in flight
    assert sorted(waits(w)) == [("scheduler", "forward3"), ("scheduler", "side2")]


def test_a_stream_does_not_wait_for_its_own_reads():
    w = Streams()
    f = fences_on(w)
    w.now = "side"
    f.before_read(), f.after_read()
    f.before_write(), f.after_write()
    assert waits(w) == []


def test_cpu_fences_do_nothing():
    f = StreamFences(CudaStreams.for_device(torch.device("cpu")))
    assert not f.enabled
    for call in (f.before_read, f.after_read, f.before_write, f.after_write):
        call()
    f.hand_over([torch.zeros(1)])  # a CPU tensor: no record_stream call


def test_the_bank_fences_every_read_and_write():
    w = Streams()
    bank = DistillerBank(ESampConfig(distiller="mlp", max_groups=2, intermediate=8), hidden=8)
    bank.fences = fences_on(w)
    handed = []
    bank.fences.hand_over = lambda tensors, stream=None: handed.append((len(list(tensors)), (stream or w.current()).name))
    layout = BatchLayout.from_slots([0, 0, 1, 1])  # one bucket: one read (and one write) per call
    bank.predict(layout, torch.randn(4, 8))  # forward1: a read
    w.now = "side"
    bank.train_step(layout, torch.randn(4, 8), torch.randn(4, 8))  # side2: a write (it reads the same rows in place)
    w.now = "forward"
    bank.predict(layout, torch.randn(4, 8))  # forward3
    w.now = "side"
    bank.set_base({k: v[:1].clone() for k, v in bank.params.items()})  # side4: a new base, on the trainer's stream
    w.now = "scheduler"
    bank.reset([1])  # scheduler5: reads the base; scheduler6: writes the slot
    assert waits(w) == [
        ("side", "forward1"),  # the training step after the forward's read
        ("forward", "side2"),  # the next prediction after that step
        ("side", "forward3"),  # the new base after that prediction
        ("scheduler", "side4"),  # the reset's copy of the base after it was written
        ("scheduler", "forward3"), ("scheduler", "side4"),  # the reset after every other stream's read and the last write
    ]
    assert handed == [(len(bank.params), "scheduler")]  # the base's tensors are kept alive for the reading stream
