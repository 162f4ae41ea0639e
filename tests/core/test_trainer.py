"""AsyncTrainer: the staleness bound, NaN recovery, torn-read freedom, mode equivalence."""

import threading

import pytest
import torch

from sglang_esamp.core import AsyncTrainer, BatchLayout, DistillerBank, ESampConfig, GroupStats

D = 16


def setup(mode="thread", staleness=1, groups=2, optimizer="sgd"):
    cfg = ESampConfig(max_groups=groups, intermediate=16, staleness=staleness, trainer=mode, optimizer=optimizer)
    bank = DistillerBank(cfg, hidden=D)
    stats = GroupStats(groups)
    return bank, stats, AsyncTrainer(bank, stats, staleness=staleness, mode=mode)


def batches(n, rows=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, D, generator=g), torch.randn(rows, D, generator=g)) for _ in range(n)]


@pytest.mark.parametrize("staleness", [0, 2])
def test_predict_waits_until_within_staleness(staleness):
    bank, _, trainer = setup(staleness=staleness)
    gate = threading.Semaphore(0)
    real_step = bank.train_step

    def gated(*args):
        gate.acquire()
        return real_step(*args)

    bank.train_step = gated
    layout = BatchLayout.from_slots([0, 0, 0, 0])
    for x, y in batches(4):
        trainer.submit(layout, x, y)
    x = batches(1)[0][0]
    done = threading.Event()
    seen = []

    def predictor():
        trainer.predict(layout, x)
        seen.append(trainer.finished)
        done.set()

    threading.Thread(target=predictor, daemon=True).start()
    for released in range(4 - staleness):
        assert not done.wait(0.2), f"predicted with {released} of 4 steps finished"
        gate.release()
    assert done.wait(5.0)
    assert seen[0] >= 4 - staleness
    for _ in range(staleness):
        gate.release()
    trainer.drain()
    assert trainer.finished == 4
    trainer.close()


def test_thread_and_inline_modes_give_the_same_weights():
    results = []
    for mode in ("thread", "inline"):
        bank, stats, trainer = setup(mode=mode)
        layout = BatchLayout.from_slots([0, 1, 0, 1])
        for x, y in batches(6):
            trainer.predict(layout, x)
            trainer.submit(layout, x, y)
        trainer.drain()
        trainer.close()
        results.append((bank.params, stats.snapshot(0)))
    (pa, sa), (pb, sb) = results
    for k in pa:
        assert torch.equal(pa[k], pb[k])
    assert sa == sb and sa["steps"] == 6


def test_stats_follow_training():
    bank, stats, trainer = setup(mode="inline")
    layout = BatchLayout.from_slots([0, 0, 0, 0])
    losses = []
    for x, y in batches(5):
        trainer.submit(layout, x, y)
        losses.append(float(stats.table["loss"][0]))
    snap = stats.snapshot(0)
    assert snap["steps"] == 5 and snap["skipped"] == 0
    assert snap["loss"] == pytest.approx(losses[-1])
    assert min(losses) <= snap["loss_mean"] <= max(losses)
    assert snap["novelty"] > 0 and 0 < snap["rel_err"]
    assert stats.snapshot(1)["steps"] == 0


def test_non_finite_step_resets_that_group_and_counts_it():
    bank, stats, trainer = setup(mode="thread")
    layout = BatchLayout.from_slots([0, 0, 1, 1])
    for x, y in batches(3):
        trainer.submit(layout, x, y)
    trainer.drain()
    x, y = batches(1, seed=9)[0]
    y[1, 3] = float("inf")  # group 0 diverges
    trainer.submit(layout, x, y)
    trainer.drain()
    snap0, snap1 = stats.snapshot(0), stats.snapshot(1)
    assert snap0["resets"] == 1 and snap0["skipped"] == 1
    assert bank.step_count[0] == 0  # re-initialised
    assert snap1["resets"] == 0 and snap1["steps"] == 4 and bank.step_count[1] == 4
    assert stats.total_resets == 1 and stats.total_skipped == 1
    pred = trainer.predict(layout, x)
    assert torch.isfinite(pred).all()
    trainer.close()


def test_no_torn_reads_while_training_in_a_thread():
    """A reader's copy always equals the weights after some whole number of steps."""
    data = batches(40, seed=3)
    layout = BatchLayout.from_slots([0, 0, 1, 1])
    slots = torch.tensor([0, 1])

    bank, _, trainer = setup(mode="thread", staleness=40)
    seen = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(bank.read(slots))

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    for x, y in data:
        trainer.submit(layout, x, y)
    trainer.drain()
    stop.set()
    for t in readers:
        t.join()
    trainer.close()

    replay, _, _ = setup(mode="inline")
    history = [replay.read(slots)[0]]
    for x, y in data:
        replay.train_step(layout, x, y)
        history.append(replay.read(slots)[0])
    assert len(seen) > 10
    versions = set()
    for params, steps in seen:
        step = int(steps[0])
        assert int(steps[1]) == step  # both groups come from the same step
        versions.add(step)
        for k, v in params.items():
            assert torch.equal(v, history[step][k]), f"torn read at step {step}"
    assert len(versions) > 1  # the readers really overlapped the training


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_a_failing_step_resets_its_groups_and_training_goes_on(mode, caplog):
    """A step that raises reaches neither the sampling side nor the other groups: its groups
    start over, the failure is counted and logged with its traceback, later steps train."""
    bank, stats, trainer = setup(mode=mode, groups=3, optimizer="adam")
    layout, other = BatchLayout.from_slots([0, 0, 1]), BatchLayout.from_slots([2])
    trainer.submit(layout, torch.randn(3, D), torch.randn(3, D))
    trainer.submit(other, torch.randn(1, D), torch.randn(1, D))
    trainer.drain()
    kept = {k: v[2].clone() for k, v in bank.params.items()}
    real, calls = bank.train_step, []

    def broken(lay, *args):
        calls.append(lay.slot_list)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (injected)")
        return real(lay, *args)

    bank.train_step = broken
    trainer.submit(layout, torch.randn(3, D), torch.randn(3, D))
    trainer.drain()  # returns: the failure does not reach the sampling side
    assert trainer.failures == 1 and trainer.finished == trainer.submitted == 3
    assert "out of memory (injected)" in caplog.text
    assert bank.step_count.tolist() == [0.0, 0.0, 1.0]  # slots 0 and 1 start over, slot 2 is untouched
    for k in bank.params:
        assert not bank.exp_avg[k][:2].any() and torch.equal(bank.params[k][2], kept[k])
    assert stats.snapshot(0)["resets"] == stats.snapshot(1)["resets"] == 1 and stats.snapshot(2)["resets"] == 0
    trainer.submit(layout, torch.randn(3, D), torch.randn(3, D))  # the next step trains again
    trainer.drain()
    assert trainer.failures == 1 and bank.step_count.tolist() == [1.0, 1.0, 1.0]
    trainer.close()


@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_every_k_batches_train_as_one_step_on_their_stacked_rows(mode):
    """train_every = 2: two batches make one step, equal to the bank's step on both batches'
    rows; drain trains a lone held batch rather than dropping it."""
    cfg = ESampConfig(max_groups=2, intermediate=16, seed=3)
    bank, ref = DistillerBank(cfg, hidden=D), DistillerBank(cfg, hidden=D)
    trainer = AsyncTrainer(bank, GroupStats(2), staleness=0, mode=mode, every=2)
    first, second = BatchLayout.from_slots([0, 0, 1, -1]), BatchLayout.from_slots([1, 0, 0, 1])
    (x1, y1), (x2, y2), (x3, y3) = batches(3)
    trainer.submit(first, x1, y1)
    assert trainer.submitted == 0 and bank.step_count.tolist() == [0.0, 0.0]  # held
    x1.zero_()  # the trainer holds its own copy
    trainer.submit(second, x2, y2)
    trainer.drain()
    assert trainer.submitted == trainer.finished == 1
    ref.train_step(BatchLayout.stacked([first, second]), torch.cat([batches(1)[0][0], x2]), torch.cat([y1, y2]))
    for k in bank.params:
        torch.testing.assert_close(bank.params[k], ref.params[k], rtol=0, atol=0)
    trainer.submit(BatchLayout.from_slots([0, 0, 0, 0]), x3, y3, repeat=1)  # a prompt fit's step
    trainer.submit(BatchLayout.from_slots([1, 1, 1, 1]), x3, y3)
    assert trainer.submitted == 2
    trainer.drain()
    assert trainer.submitted == trainer.finished == 3 and bank.step_count.tolist() == [2.0, 2.0]
    trainer.close()


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_a_non_finite_group_in_another_size_bucket_resets_only_itself(mode):
    """Slots [3, 3, 3, 3, 7]: the groups fall in two size buckets, trained in bucket order
    (7 first), not in the order of first appearance (3 first). Slot 7 is not finite: slot 7
    alone starts over, slot 3 keeps its step."""
    bank, stats, trainer = setup(mode=mode, groups=8)
    layout = BatchLayout.from_slots([3, 3, 3, 3, 7])
    x, y = batches(1, rows=5)[0]
    y[4, 0] = float("nan")  # slot 7's only row
    trainer.submit(layout, x, y)
    trainer.drain()
    assert stats.snapshot(7)["resets"] == 1 and stats.snapshot(3)["resets"] == 0
    assert bank.step_count[3] == 1 and bank.step_count[7] == 0
    trainer.close()


@pytest.mark.parametrize("lockstep", [True, False])
def test_in_lockstep_a_prediction_sees_exactly_the_steps_its_staleness_allows(lockstep):
    """Tensor-parallel ranks must predict alike. In lockstep the worker runs a step only once a
    prediction asks for it, so a prediction after s submitted steps sees exactly s - staleness
    of them, whatever the worker's timing; without it the worker may be further on."""
    import time

    cfg = ESampConfig(max_groups=2, intermediate=16, staleness=1, trainer="thread", optimizer="sgd")
    bank, ref = DistillerBank(cfg, hidden=D), DistillerBank(cfg, hidden=D)
    trainer = AsyncTrainer(bank, GroupStats(2), staleness=1, mode="thread", lockstep=lockstep)
    layout, data = BatchLayout.from_slots([0, 0, 1, 1]), batches(6)
    same = []
    for k, (x, y) in enumerate(data):
        if k >= 2:
            ref.train_step(layout, *data[k - 2])  # the reference has steps 0 .. k - 2: s - 1 of the s = k submitted
        same.append(torch.equal(trainer.predict(layout, x), ref.predict(layout, x)))
        trainer.submit(layout, x, y)
        time.sleep(0.05)  # time enough for the worker to run what it may
    trainer.drain()
    trainer.close()
    assert all(same) == lockstep, same


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker's death, on purpose
def test_wait_returns_once_the_worker_has_died():
    """A worker killed by something it does not catch (here SystemExit) leaves steps that
    will never finish: waiting for them returns instead of hanging the scheduler."""
    bank, _, trainer = setup()

    def fatal(*args):
        raise SystemExit("worker killed")

    bank.train_step = fatal
    layout = BatchLayout.from_slots([0, 0])
    for x, y in batches(3, rows=2):
        trainer.submit(layout, x, y)
    trainer._worker.join(5.0)
    assert not trainer._worker.is_alive() and trainer.finished == 1 < trainer.submitted == 3
    waiter = threading.Thread(target=trainer.drain, daemon=True)
    waiter.start()
    waiter.join(5.0)
    assert not waiter.is_alive()


def test_close_finishes_the_queued_steps_first():
    bank, _, trainer = setup()
    gate = threading.Event()
    real_step = bank.train_step
    bank.train_step = lambda *args: gate.wait() and real_step(*args)
    layout = BatchLayout.from_slots([0, 0, 1])
    for x, y in batches(3, rows=3):
        trainer.submit(layout, x, y)
    closer = threading.Thread(target=trainer.close, daemon=True)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # three steps are queued or running
    gate.set()
    closer.join(5.0)
    assert not closer.is_alive() and trainer.finished == 3 and bank.step_count.tolist() == [3.0, 3.0]
