"""The GPU path on a CPU: the trainer and the bank on ``CudaLike`` streams (a side stream whose
work lands late and interleaved, an allocator that poisons what was not handed over) must
give, prediction by prediction and weight by weight, what a synchronous CPU run gives, over
the random scenario that ``python -m sglang_esamp.tools.gpu_stream_check`` runs on a GPU."""

from collections import deque

import pytest
import torch

from sglang_esamp.core import AsyncTrainer, BatchLayout, DistillerBank, ESampConfig, GroupStats
from sglang_esamp.core import trainer as trainer_module
from sglang_esamp.core import warm_base as wb
from sglang_esamp.core.distiller import random_init
from sglang_esamp.tools.gpu_stream_check import GROUPS, scenario

from .cuda_like import CudaLike

D = 8


class System:
    """A bank, its stats, a warm base and a trainer: on ``CudaLike`` streams or synchronous."""

    def __init__(self, cfg: ESampConfig, world: CudaLike | None, mode: str, every: int, lockstep: bool = False):
        self.bank = DistillerBank(cfg, hidden=D, streams=world)
        self.stats = GroupStats(GROUPS, streams=world)
        arch = self.bank.arch.base_arch  # what the warm base trains: the group's own shape, or the tail's shared base
        init = random_init(arch.shapes(), 1, torch.Generator().manual_seed(5), None)
        self.warm = wb.WarmBase(arch, D, "cpu", torch.float32, init, seed=5)
        self.trainer = AsyncTrainer(self.bank, self.stats, cfg.staleness, mode, warm=self.warm, every=every, lockstep=lockstep)

    def open(self, slot: int, reused: bool) -> None:
        """A new group moves into ``slot``, as the runtime does it."""
        if reused:
            self.trainer.retire(slot)
        self.bank.reset([slot])
        self.stats.clear([slot])

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"params.{k}": v for k, v in self.bank.params.items()}
        out |= {f"exp_avg.{k}": v for k, v in self.bank.exp_avg.items()} | {"steps": self.bank.step_count}
        out |= {f"stats.{k}": v for k, v in self.stats.table.items()}
        return out | {f"base.{k}": v for k, v in self.warm.params.items()}


@pytest.mark.parametrize(("mode", "staleness", "every", "optimizer", "seed", "distiller"), [
    ("inline", 0, 1, "sgd", 0, "lowrank"), ("inline", 1, 2, "adam", 1, "lowrank"), ("thread", 0, 1, "adam", 2, "lowrank"),
    ("thread", 1, 1, "sgd", 3, "lowrank"), ("thread", 0, 1, "sgd", 4, "tail"), ("thread", 1, 1, "sgd", 5, "tail"),
])
def test_the_gpu_path_matches_a_synchronous_run(monkeypatch, mode, staleness, every, optimizer, seed, distiller):
    """Every prediction must be determined: the thread worker runs in lockstep (as under tensor
    parallelism), so with staleness 1 a prediction sees exactly the steps before the last; the
    synchronous reference trains each step one prediction late to match. With ``tail`` the
    groups run on the shared base that the warm base's steps replace while they train."""
    monkeypatch.setattr(wb, "MIN_ROWS", 24)  # a base that fits, and is handed to the bank, within the run
    monkeypatch.setattr(wb, "FIRST_STEPS", 6)
    monkeypatch.setattr(wb, "BATCH", 16)
    monkeypatch.setattr(trainer_module, "PUBLISH_EVERY", 2)
    cfg = ESampConfig(max_groups=GROUPS, distiller=distiller, rank=4, intermediate=16, staleness=staleness,
                      optimizer=optimizer, seed=seed)
    world = CudaLike(seed=seed)
    ref, gpu = System(cfg, None, "inline", every), System(cfg, world, mode, every, lockstep=True)
    not_finite = set()  # slots whose group got a non-finite row: those, and only those, start over
    lag = staleness if mode == "thread" else 0  # in lockstep the worker is exactly this many steps behind
    late: deque = deque()  # the reference's steps, held back by the lag

    def catch_up(upto=None):  # the GPU side has issued steps: the reference trains what it held back, as far
        while late and (upto is None or ref.trainer.submitted < upto):
            ref.trainer.submit(*late.popleft())

    with world:
        for step, (op, args) in enumerate(scenario(seed, steps=20, hidden=D)):
            if op == "open":
                gpu.open(*args)  # a reused slot: the old group's steps are issued first, and only those
                catch_up(gpu.trainer.finished)
                ref.open(*args)
                not_finite.discard(args[0])
            elif op == "idle":
                if ref.warm.owed:  # the base owes steps: the trainer drains before them
                    catch_up()
                ref.trainer.idle(0.0, steps=2), gpu.trainer.idle(0.0, steps=2)
            else:
                row_slots, src, tgt, bad = args
                not_finite |= {bad} - {None}
                layouts = BatchLayout.from_slots(row_slots), BatchLayout.from_slots(row_slots)
                want = ref.trainer.predict(layouts[0], src)
                got = gpu.trainer.predict(layouts[1], src.clone())
                torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=f"prediction of step {step}")
                late.append((layouts[0], src, tgt))
                while len(late) > lag:
                    ref.trainer.submit(*late.popleft())
                gpu.trainer.submit(layouts[1], src.clone(), tgt.clone())
        catch_up()
        for system in (ref, gpu):
            system.trainer.drain()
        world.synchronize()
    ref.trainer.close(), gpu.trainer.close()
    assert not world.poisoned, world.poisoned[:3]
    assert gpu.trainer.failures == 0 and gpu.stats.total_resets == ref.stats.total_resets
    assert ref.warm.steps > 0 and ref.stats.total_resets > 0  # the run swapped bases and reset groups
    for system in (ref, gpu):
        assert set(system.stats.table["resets"].nonzero().flatten().tolist()) == not_finite
    want = ref.state()
    for name, value in gpu.state().items():
        torch.testing.assert_close(value, want[name], rtol=0, atol=0, msg=name)


def test_the_stand_in_runs_side_work_late_and_poisons_what_was_not_handed_over():
    world = CudaLike(seed=0, progress=0.0)
    side, event = world.new_stream(), world.new_event()
    with world:
        made = torch.arange(4.0)  # on the forward stream
        handed = torch.arange(4.0)
        world.record_stream(handed, side)
        with world.use(side):
            late = made * 2 + handed
            event.record(side)
    issued = late.clone()  # outside the stand-in: a look at the memory, no op of any stream
    event.synchronize()
    assert issued.isnan().all()  # issued, not run yet
    assert late.isnan().all() and len(world.poisoned) == 1  # ``made`` was read after the host may have dropped it
    assert torch.equal(handed, torch.arange(4.0))


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_a_new_group_in_a_used_slot_waits_for_no_device_work(mode):
    """Slot 0's group trains, then leaves; its steps are issued but still queued on the side
    stream when a new group moves in. The host waits for nothing on the device (the reset is
    ordered after them by events), and the new group starts from fresh weights, untouched
    by the old group's steps that land after the reset was issued."""
    cfg = ESampConfig(max_groups=2, distiller="lowrank", rank=4)
    world = CudaLike(seed=0, progress=0.0)  # the side stream runs only when something waits for it
    system = System(cfg, world, mode, every=1)
    twin = DistillerBank(cfg, hidden=D)  # the same seed: its reset draws the weights a reset must give
    twin.reset([0])
    g = torch.Generator().manual_seed(0)
    with world:
        for _ in range(3):
            layout = BatchLayout.from_slots([0, 0, 1])
            system.trainer.predict(layout, torch.randn(3, D, generator=g))
            system.trainer.submit(layout, torch.randn(3, D, generator=g), torch.randn(3, D, generator=g))
        system.trainer.wait(system.trainer.submitted)  # issued, not run: the side stream is lazy
        assert any(side.done < side.issued for side in world.lazy_streams) or mode == "inline"
        waits = world.host_waits
        system.open(0, reused=True)
        assert world.host_waits == waits  # no event synchronised on the host
        world.synchronize()
    system.trainer.close()
    assert not world.poisoned, world.poisoned[:3]
    for k, v in system.bank.params.items():
        torch.testing.assert_close(v[0], twin.params[k][0], rtol=0, atol=0, msg=k)  # the new group's weights: fresh
    assert float(system.stats.table["steps"][0]) == 0 and float(system.stats.table["steps"][1]) == 3
