"""The server-trained base: its reservoir, its schedule, what it learns, and how the trainer
runs it and hands it to the bank."""

import math
import threading
import time

import pytest
import torch

from sglang_esamp.core import AsyncTrainer, BatchLayout, DistillerBank, ESampConfig, GroupStats
from sglang_esamp.core import warm_base as wb
from sglang_esamp.core.distiller import build_architecture, random_init, rms_norm
from sglang_esamp.core.reservoir import RowReservoir

D = 16


def rows(n, start=0):
    """(n, D) rows whose first column numbers them."""
    x = torch.zeros(n, D)
    x[:, 0] = torch.arange(start, start + n, dtype=torch.float32)
    return x


def test_reservoir_keeps_the_newest_rows_across_the_wrap():
    res = RowReservoir(5, D, "cpu", torch.float32)
    res.add(rows(3), rows(3) + 100)
    res.add(rows(4, start=3), rows(4, start=3) + 100)  # 7 rows into 5: 0 and 1 are overwritten
    assert (res.filled, res.added) == (5, 7)
    assert sorted(res.src[:, 0].tolist()) == [2, 3, 4, 5, 6]
    assert torch.equal(res.tgt, res.src + 100)  # pairs stay together
    res.add(rows(9, start=10), rows(9, start=10) + 100)  # more than it holds: the last 5
    assert sorted(res.src[:, 0].tolist()) == [14, 15, 16, 17, 18]
    src, tgt = res.sample(200, torch.Generator().manual_seed(0))
    assert src.dtype == torch.float32 and set(src[:, 0].tolist()) == {14, 15, 16, 17, 18}
    assert torch.equal(tgt, src + 100)


def test_reservoir_samples_only_rows_it_holds():
    res = RowReservoir(100, D, "cpu", torch.bfloat16)
    res.add(rows(3, start=1), rows(3, start=1))
    src, _ = res.sample(300, torch.Generator().manual_seed(0))
    assert set(src[:, 0].tolist()) == {1, 2, 3}  # never a zero row of the empty part
    with pytest.raises(ValueError, match="empty"):
        RowReservoir(4, D, "cpu", torch.float32).sample(1, torch.Generator())


def test_reservoir_size_is_bounded_in_bytes():
    small = RowReservoir.sized(576, "cpu", torch.float32)
    assert small.capacity == 8192  # 8192 x 2 x 576 x 4 B = 36 MiB
    assert RowReservoir.bytes_for(8192, torch.bfloat16) == 64 * 2**20  # 2048 rows of 2 x 8192 bf16
    assert RowReservoir.bytes_for(576, torch.float32) == small.nbytes


@pytest.mark.parametrize(("hidden", "dtype"), [(16384, torch.bfloat16), (8192, torch.float32), (28672, torch.float32)])
def test_the_reservoir_holds_the_rows_of_the_first_fit_at_any_hidden_size(hidden, dtype):
    """The 64 MiB bound yields to the rows the base's first fit needs: a base that could never
    gather them would stay random without a word."""
    row_bytes = 2 * hidden * dtype.itemsize  # a (shallow, deep) pair
    assert wb.WarmBase.bytes_for(0, hidden, dtype) - 4 >= wb.MIN_ROWS * row_bytes  # what the server reserves for it
    res = RowReservoir.sized(hidden, "meta", dtype, least=wb.MIN_ROWS)
    assert res.capacity >= wb.MIN_ROWS
    assert RowReservoir.bytes_for(hidden, dtype, least=wb.MIN_ROWS) == res.nbytes


def make_base(**kw):
    arch = build_architecture("mlp", D, 16, 4)
    init = random_init(arch.shapes(), 1, torch.Generator().manual_seed(0), None)
    return wb.WarmBase(arch, D, "cpu", torch.float32, init, **kw)


@pytest.fixture
def small_schedule(monkeypatch):
    for name, value in {"ROWS_PER_STEP": 8, "MIN_ROWS": 32, "FIRST_STEPS": 10, "BATCH": 16, "REFRESH_ROWS": 8, "MAX_OWED": 3}.items():
        monkeypatch.setattr(wb, name, value)


def test_the_base_owes_a_first_fit_then_refresh_steps(small_schedule):
    base = make_base()
    base.add(torch.randn(64, D), torch.randn(64, D))  # 8 of 64 rows kept (every 8th)
    assert (base.reservoir.added, base.owed) == (8, 0)
    for _ in range(3):
        base.add(torch.randn(8, D), torch.randn(8, D))
    assert (base.reservoir.filled, base.owed) == (32, 10)  # MIN_ROWS reached: the whole first fit
    while base.owed:
        base.step()
    assert base.steps == 10 and base.fitted and math.isfinite(float(base.rel_err))
    base.add(torch.randn(4, D), torch.randn(4, D))
    assert base.owed == 0  # half a refresh earned
    base.add(torch.randn(4, D), torch.randn(4, D))
    assert base.owed == 1
    for _ in range(10):
        base.add(torch.randn(8, D), torch.randn(8, D))
    assert base.owed == 3  # a busy server's debt is capped
    assert base.rows == base.reservoir.added == 8 + 24 + 8 + 80


def test_a_cached_base_starts_fitted_and_counts_its_rows(small_schedule):
    base = make_base(steps=10, rows=500)
    assert base.fitted and base.rows == 500
    base.add(torch.randn(8, D), torch.randn(8, D))
    assert base.owed == 1 and base.rows == 508  # refresh steps only: no first fit again


def test_the_first_fit_learns_the_map():
    """On rows where the deep state is a fixed function of the shallow one, the first fit
    (the shipped schedule) cuts the relative error far below the random init's."""
    gen = torch.Generator().manual_seed(1)
    mix = torch.randn(D, D, generator=gen) / D**0.5
    src = torch.randn(4096, D, generator=gen)
    tgt = rms_norm(src @ mix + 0.5 * torch.tanh(src))
    base = make_base()
    arch = base.arch

    def err():
        with torch.no_grad():
            pred = arch.forward(base.params, src[-512:].unsqueeze(0))[0]
        return float((pred - tgt[-512:]).pow(2).sum() / tgt[-512:].pow(2).sum())

    before = err()
    for i in range(0, 3584, 64):
        base.add(src[i : i + 64], tgt[i : i + 64])
    assert base.owed == wb.FIRST_STEPS
    while base.owed:
        base.step()
    assert err() < 0.2 * before, (before, err())


def test_a_non_finite_minibatch_leaves_a_fresh_base_unchanged(small_schedule):
    base = make_base()
    before = base.snapshot()
    bad = torch.full((32, D), float("nan"))
    for i in range(4):
        base.add(bad[8 * i : 8 * i + 8], bad[8 * i : 8 * i + 8])
    base.step()
    assert all(torch.equal(before[k], base.params[k].detach()) for k in before)


def test_new_groups_start_from_a_published_base():
    cfg = ESampConfig(distiller="mlp", max_groups=2, intermediate=16)
    bank = DistillerBank(cfg, hidden=D)
    base = {k: torch.full_like(v[:1], 0.25) for k, v in bank.params.items()}
    old = {k: v[1].clone() for k, v in bank.params.items()}
    bank.set_base(base)
    bank.reset([0])
    assert all(torch.equal(bank.params[k][0], torch.full_like(old[k], 0.25)) for k in old)
    assert all(torch.equal(bank.params[k][1], old[k]) for k in old)  # a slot in use keeps its weights


def test_the_fit_is_reported_once(small_schedule):
    """The worker can be handed a second work item of base steps while it runs the first (the
    queue is empty meanwhile); one that finds nothing owed does not report the fit again."""
    bank = DistillerBank(ESampConfig(distiller="mlp", max_groups=2, intermediate=16), hidden=D)
    fitted = []
    trainer = AsyncTrainer(bank, GroupStats(2), staleness=0, mode="inline", warm=make_base(),
                           on_fitted=lambda b: fitted.append(b.steps))
    for _ in range(4):
        trainer.submit(BatchLayout.from_slots([0, 0, 1, 1, 1, 1, 1, 1]), torch.randn(8, D), torch.randn(8, D))
    trainer._base_steps(wb.FIRST_STEPS)
    trainer._base_steps(8)  # the second work item
    assert fitted == [wb.FIRST_STEPS]


@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_the_trainer_feeds_runs_and_publishes_the_base(mode, small_schedule):
    cfg = ESampConfig(distiller="mlp", max_groups=2, intermediate=16, trainer=mode)
    bank, stats = DistillerBank(cfg, hidden=D), GroupStats(2)
    warm = make_base()
    fitted = []
    trainer = AsyncTrainer(bank, stats, staleness=0, mode=mode, warm=warm, on_fitted=lambda b: fitted.append(b.steps))
    layout = BatchLayout.from_slots([0, 0, 1, 1, 1, 1, 1, 1])
    assert not trainer.idle(1.0)  # nothing owed yet
    for _ in range(4):
        trainer.submit(layout, torch.randn(8, D), torch.randn(8, D))
    trainer.drain()
    assert warm.reservoir.filled == 32 and warm.owed == 10
    deadline = time.monotonic() + 30
    while trainer.idle(1.0) and time.monotonic() < deadline:
        time.sleep(0.01)
    while not fitted and time.monotonic() < deadline:  # the worker calls back after its last step
        time.sleep(0.01)
    assert warm.owed == 0 and warm.steps == 10 and fitted == [10]
    assert all(torch.equal(bank.base[k], warm.params[k].detach()) for k in bank.base)  # published at the end
    trainer.close()


def test_idle_training_is_bounded_in_time(small_schedule, monkeypatch):
    cfg = ESampConfig(distiller="mlp", max_groups=1, intermediate=16, trainer="inline")
    bank, stats = DistillerBank(cfg, hidden=D), GroupStats(1)
    warm = make_base()
    slow = warm.step

    def step():
        time.sleep(0.02)
        slow()

    monkeypatch.setattr(warm, "step", step)
    trainer = AsyncTrainer(bank, stats, staleness=0, mode="inline", warm=warm)
    for _ in range(4):
        trainer.submit(BatchLayout.from_slots([0] * 8), torch.randn(8, D), torch.randn(8, D))
    assert trainer.idle(0.05)
    assert 1 <= warm.steps <= 4 and warm.owed == 10 - warm.steps  # a slice, not the whole fit


def test_a_failing_base_step_drops_its_debt_and_spares_the_groups(small_schedule, monkeypatch):
    cfg = ESampConfig(distiller="mlp", max_groups=1, intermediate=16, trainer="inline")
    bank, stats = DistillerBank(cfg, hidden=D), GroupStats(1)
    warm = make_base()
    trainer = AsyncTrainer(bank, stats, staleness=0, mode="inline", warm=warm)
    for _ in range(4):
        trainer.submit(BatchLayout.from_slots([0] * 8), torch.randn(8, D), torch.randn(8, D))
    monkeypatch.setattr(warm, "step", lambda: (_ for _ in ()).throw(RuntimeError("out of memory")))
    assert trainer.idle(0.05)
    assert warm.owed == 0 and trainer.base_failures == 1 and trainer.failures == 0
    assert float(stats.snapshot(0)["steps"]) == 4  # the group trained on


def test_thread_mode_queues_base_steps_only_behind_an_empty_queue(small_schedule):
    """A group's step never waits behind base steps queued after it arrived."""
    from sglang_esamp.core.trainer import _BASE

    cfg = ESampConfig(distiller="mlp", max_groups=1, intermediate=16, trainer="thread")
    bank, stats = DistillerBank(cfg, hidden=D), GroupStats(1)
    warm = make_base()
    gate, started = threading.Event(), threading.Event()
    real = bank.train_step

    def gated(*args):
        started.set()
        gate.wait()
        return real(*args)

    bank.train_step = gated
    trainer = AsyncTrainer(bank, stats, staleness=0, mode="thread", warm=warm)
    warm.reservoir.add(torch.randn(32, D), torch.randn(32, D))
    warm.owed = 5
    layout = BatchLayout.from_slots([0] * 8)
    trainer.submit(layout, torch.randn(8, D), torch.randn(8, D))
    assert started.wait(10)  # the worker runs the first step
    trainer.submit(layout, torch.randn(8, D), torch.randn(8, D))  # the second waits in the queue
    assert trainer.idle(0.05)
    assert len(trainer._queue) == 1 and trainer._queue[0] is not _BASE
    gate.set()
    trainer.drain()
    deadline = time.monotonic() + 30
    while trainer.idle(0.05) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert warm.owed == 0 and warm.steps == wb.FIRST_STEPS  # the group steps' rows made the reservoir owe the whole fit
    trainer.close()


def test_the_first_fit_logs_its_progress(small_schedule, monkeypatch, caplog):
    import logging

    from sglang_esamp.core import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "PROGRESS_EVERY", 5)
    cfg = ESampConfig(distiller="mlp", max_groups=1, intermediate=16, trainer="inline")
    warm = make_base()
    trainer = AsyncTrainer(DistillerBank(cfg, hidden=D), GroupStats(1), staleness=0, mode="inline", warm=warm)
    for _ in range(4):
        trainer.submit(BatchLayout.from_slots([0] * 8), torch.randn(8, D), torch.randn(8, D))
    with caplog.at_level(logging.INFO, logger="sglang_esamp.core.trainer"):
        while trainer.idle(1.0):
            pass
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "ESamp base distiller: first fit begins, 10 steps on 32 rows, in idle time"
    assert lines[1].startswith("ESamp base distiller: first fit 5/10 steps, about ") and len(lines) == 2


@pytest.mark.parametrize("steps, lr", [(0, 2e-3), (150, 1.7218e-3), (300, 1.05e-3), (600, 1e-4), (5000, 1e-4)])
def test_the_learning_rate_decays_by_a_cosine_over_the_first_fit(steps, lr):
    """Measured from the weights: Adam's first step moves every weight by the learning rate
    (m / sqrt(v) is the gradient's sign), so the largest move is it. 2e-3 at the first step,
    a cosine to 1e-4 at the 600th, 1e-4 for every refresh after it."""
    base = make_base(steps=steps)
    base.add(torch.randn(64, D), torch.randn(64, D))
    before = base.snapshot()
    base.step()
    moved = max(float((base.params[k].detach() - before[k]).abs().max()) for k in before)
    assert moved == pytest.approx(lr, rel=1e-3)


def test_a_non_finite_row_in_the_reservoir_never_reaches_the_weights(small_schedule):
    """One NaN and one inf row among the fitting rows: the minibatches that draw them add
    nothing, the others still train the base, and nothing it holds turns non-finite."""
    base = make_base()
    src, tgt = torch.randn(32, D), torch.randn(32, D)
    tgt[3, 0], src[17, 5] = float("nan"), float("inf")
    for i in range(4):
        base.add(src[8 * i : 8 * i + 8], tgt[8 * i : 8 * i + 8])
    before = base.snapshot()
    while base.owed:
        base.step()
    for part in (base.params, base.exp_avg, base.exp_avg_sq):
        assert all(torch.isfinite(v).all() for v in part.values())
    assert any(not torch.equal(before[k], base.params[k].detach()) for k in before)
