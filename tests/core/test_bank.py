"""DistillerBank: learning, parity with torch.optim.Adam and SGD, group isolation, non-finite steps."""

import pytest
import torch

from sglang_esamp.core import BatchLayout, DistillerBank, ESampConfig
from sglang_esamp.core.distiller import rms_norm

D = 32


def make_problem(seed: int, rows: int = 64):
    """A fixed random linear map plus noise, RMS-normalised like the real target (the output
    of the model's final RMSNorm)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(D, D, generator=g) / D**0.5

    def sample(n=rows):
        x = torch.randn(n, D, generator=g) * 3.0
        return x, rms_norm(x @ a) + 0.02 * torch.randn(n, D, generator=g)

    return sample


@pytest.mark.parametrize("kind, optimizer, lr, steps", [("mlp", "adam", 3e-3, 300), ("lowrank", "adam", 1e-2, 500),
                                                       ("mlp", "sgd", 0.3, 1000)])
def test_loss_falls_by_90_percent(kind, optimizer, lr, steps):
    cfg = ESampConfig(distiller=kind, max_groups=2, intermediate=64, rank=D, optimizer=optimizer, lr=lr, sgd_lr=lr)
    bank = DistillerBank(cfg, hidden=D)
    sample = make_problem(1)
    layout = BatchLayout.from_slots([0] * 64)
    x0, y0 = sample()
    first = float(bank.train_step(layout, x0, y0).loss[0])
    for _ in range(steps):
        bank.train_step(layout, *sample())
    x, y = sample()
    last = float(((bank.predict(layout, x) - y) ** 2).sum(-1).mean())
    assert last < 0.1 * first, (first, last)


def test_one_step_matches_torch_adam_with_clipping():
    cfg = ESampConfig(distiller="mlp", max_groups=3, intermediate=24, optimizer="adam", lr=1e-2, grad_clip=0.05)
    bank = DistillerBank(cfg, hidden=D)
    layout = BatchLayout.from_slots([1, 1, 1, 1, 1])
    sample = make_problem(2, rows=5)
    params, _ = bank.read(torch.tensor([1]))
    ref = {k: torch.nn.Parameter(v[0].double().clone()) for k, v in params.items()}
    opt = torch.optim.Adam(ref.values(), lr=cfg.lr, eps=cfg.adam_eps)
    for _ in range(3):
        x, y = sample()
        bank.train_step(layout, x, y)
        opt.zero_grad()
        pred = bank.arch.forward({k: v.unsqueeze(0) for k, v in ref.items()}, x.double().unsqueeze(0))[0]
        ((pred - y.double()) ** 2).sum(-1).mean().backward()
        norm = torch.nn.utils.clip_grad_norm_(ref.values(), cfg.grad_clip)
        assert norm > cfg.grad_clip  # the clip really acted
        opt.step()
    got, steps = bank.read(torch.tensor([1]))
    assert steps.tolist() == [3.0]
    for k in ref:
        torch.testing.assert_close(got[k][0].double(), ref[k].detach(), rtol=1e-4, atol=1e-5)


def test_sgd_step_matches_torch_sgd_with_clipping_and_holds_no_moments():
    cfg = ESampConfig(distiller="mlp", max_groups=3, intermediate=24, optimizer="sgd", sgd_lr=0.5, grad_clip=0.05)
    bank = DistillerBank(cfg, hidden=D)
    assert bank.exp_avg == {} and bank.exp_avg_sq == {}
    weights = sum(v[0].numel() for v in bank.params.values())
    assert bank.bytes_per_group == weights * 4 + 4
    layout = BatchLayout.from_slots([2, 2, 2, 2, 0, 0])  # slot 1, inside the step's range, has no rows
    sample = make_problem(3, rows=6)
    before, _ = bank.read(torch.tensor([1]))
    params, _ = bank.read(torch.tensor([2]))
    ref = {k: torch.nn.Parameter(v[0].double().clone()) for k, v in params.items()}
    opt = torch.optim.SGD(ref.values(), lr=cfg.sgd_lr)
    for _ in range(3):
        x, y = sample()
        bank.train_step(layout, x, y)
        opt.zero_grad()
        pred = bank.arch.forward({k: v.unsqueeze(0) for k, v in ref.items()}, x[:4].double().unsqueeze(0))[0]
        ((pred - y[:4].double()) ** 2).sum(-1).mean().backward()
        assert torch.nn.utils.clip_grad_norm_(ref.values(), cfg.grad_clip) > cfg.grad_clip
        opt.step()
    got, steps = bank.read(torch.tensor([2, 1]))
    assert steps.tolist() == [3.0, 0.0]
    for k in ref:
        torch.testing.assert_close(got[k][0].double(), ref[k].detach(), rtol=1e-4, atol=1e-5)
        assert torch.equal(got[k][1], before[k][0])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_groups_update_never_touches_another_group(optimizer):
    cfg = ESampConfig(distiller="mlp", max_groups=4, intermediate=16, optimizer=optimizer)
    bank = DistillerBank(cfg, hidden=D)
    before = {k: v.clone() for k, v in bank.params.items()}
    sample = make_problem(3, rows=6)
    layout = BatchLayout.from_slots([2, 0, 2, 0, 2, 2])
    for _ in range(5):
        bank.train_step(layout, *sample())
    for k, v in bank.params.items():
        assert torch.equal(v[1], before[k][1]) and torch.equal(v[3], before[k][3])
        if v.dim() > 2:
            assert not torch.equal(v[0], before[k][0]) and not torch.equal(v[2], before[k][2])
    assert bank.step_count.tolist() == [5.0, 0.0, 5.0, 0.0]
    for moments in (bank.exp_avg, bank.exp_avg_sq):  # slot 1 sat inside the step's slot range [0, 3)
        assert all(not v[1].any() and not v[3].any() and v[0].any() for v in moments.values())


def test_steps_work_on_the_banks_own_rows_without_gathering_them():
    """No op of a prediction or a training step gathers or scatters rows of the bank's weights
    or moments: they read and update views of the bank's storage."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    bank = DistillerBank(ESampConfig(distiller="mlp", max_groups=4, intermediate=16, optimizer="adam"), hidden=D)
    storages = {t.untyped_storage().data_ptr() for part in (bank.params, bank.exp_avg, bank.exp_avg_sq) for t in part.values()}

    class Touches(TorchDispatchMode):
        seen: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            if any(t.untyped_storage().data_ptr() in storages for t in tensors):
                self.seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    x, y = make_problem(5, rows=4)()
    layout = BatchLayout.from_slots([2, 0, 2, 0])
    with Touches() as touches:
        bank.predict(layout, x)
        bank.train_step(layout, x, y)
    assert {"mul_", "lerp_", "addcmul_", "addcdiv_", "bmm"} <= set(touches.seen)  # read and updated in place
    assert not {"index_select", "index_copy_", "index_put_", "index", "gather", "scatter_"} & set(touches.seen), touches.seen


def test_group_result_depends_only_on_its_own_rows():
    """Training slot 0 alone, or beside slot 1 in one batch, gives slot 0 the same weights."""
    cfg = ESampConfig(distiller="mlp", max_groups=2, intermediate=16)
    x, y = make_problem(4, rows=6)()
    alone, mixed = DistillerBank(cfg, hidden=D), DistillerBank(cfg, hidden=D)
    alone.train_step(BatchLayout.from_slots([0, 0, 0, -1, -1, -1]), x, y)
    mixed.train_step(BatchLayout.from_slots([0, 0, 0, 1, 1, 1]), x, y)
    for k in alone.params:
        torch.testing.assert_close(alone.params[k][0], mixed.params[k][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("distiller,optimizer,bad", [("mlp", "adam", "target"), ("mlp", "sgd", "target"),
                                                     ("tail", "sgd", "target"), ("tail", "sgd", "source")])
def test_a_non_finite_step_leaves_that_group_as_it_was(distiller, optimizer, bad):
    """Weights, moments and step count of the group with a NaN target (or an infinite source
    row) stay as they were; its neighbour in the same step trains."""
    cfg = ESampConfig(max_groups=2, intermediate=16, optimizer=optimizer, sgd_lr=0.5, distiller=distiller, tail_units=8)
    bank = DistillerBank(cfg, hidden=D)
    layout = BatchLayout.from_slots([0, 0, 1, 1])
    bank.train_step(layout, *make_problem(4, rows=4)())  # moments that are not zero
    x, y = make_problem(5, rows=4)()
    if bad == "target":
        y[0, 0] = float("nan")
    else:
        x[1, 2] = float("inf")
    before = [{k: v.clone() for k, v in part.items()} for part in (bank.params, bank.exp_avg, bank.exp_avg_sq)]
    assert bank.train_step(layout, x, y).ok.tolist() == [False, True]
    for part, old in zip((bank.params, bank.exp_avg, bank.exp_avg_sq), before):
        for k, v in part.items():
            assert torch.equal(v[0], old[k][0]) and not torch.equal(v[1], old[k][1]) and torch.isfinite(v).all(), k
    assert bank.step_count.tolist() == [1.0, 2.0]


def test_reset_restores_the_base_and_a_fresh_optimizer():
    cfg = ESampConfig(distiller="mlp", max_groups=2, intermediate=16, optimizer="adam")
    shapes = DistillerBank(cfg, hidden=D).arch.shapes()
    g = torch.Generator().manual_seed(9)
    base = {k: torch.randn(1, *shape, generator=g) for k, shape in shapes.items()}
    bank = DistillerBank(cfg, hidden=D, base=base)
    bank.train_step(BatchLayout.from_slots([0, 0, 1, 1]), *make_problem(6, rows=4)())
    trained = {k: v[1].clone() for k, v in bank.params.items()}
    bank.reset([0])
    assert bank.step_count.tolist() == [0.0, 1.0]
    for k, v in bank.params.items():
        assert torch.equal(v[0], base[k][0]) and torch.equal(v[1], trained[k]) and not torch.equal(v[1], base[k][0]), k
        assert not bank.exp_avg[k][0].any() and not bank.exp_avg_sq[k][0].any() and bank.exp_avg[k][1].any()


def test_a_base_of_the_wrong_shape_is_refused():
    cfg = ESampConfig(distiller="mlp", max_groups=2, intermediate=16)
    wrong = {k: torch.zeros(1, *shape) for k, shape in DistillerBank(cfg, hidden=D + 1).arch.shapes().items()}
    with pytest.raises(ValueError, match="base distiller does not fit this architecture"):
        DistillerBank(cfg, hidden=D, base=wrong)
    bank = DistillerBank(cfg, hidden=D)
    with pytest.raises(ValueError, match="does not fit"):
        bank.set_base({k: v.expand(2, *v.shape[1:]) for k, v in bank.params.items()})  # two rows, not one
    assert bank.base is None


def test_output_gain_starts_at_the_models_final_norm():
    gain = torch.linspace(0.5, 2.0, D)
    bank = DistillerBank(ESampConfig(distiller="mlp", max_groups=1, intermediate=8), hidden=D, out_gain=gain)
    assert torch.equal(bank.params["out_gain"][0], gain)


def test_bytes_per_group_counts_weights_and_adam_moments():
    bank = DistillerBank(ESampConfig(distiller="mlp", max_groups=1, optimizer="adam"), hidden=576)
    weights = 2 * 3 * 576 * 384 + 576
    assert bank.bytes_per_group == 3 * weights * 4 + 4


def test_groups_of_very_different_sizes_predict_and_train_as_if_alone():
    """The size buckets of BatchLayout.split change the packing, not the result."""
    cfg = ESampConfig(distiller="mlp", max_groups=6, intermediate=8)
    sizes = [40, 1, 1, 3, 9, 1]
    slots = [g for g, n in enumerate(sizes) for _ in range(n)]
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randn(len(slots), 8, generator=g), torch.randn(len(slots), 8, generator=g)
    together, alone = DistillerBank(cfg, 8), DistillerBank(cfg, 8)
    layout = BatchLayout.from_slots(slots)
    assert len(layout.split) == 4
    pred = together.predict(layout, src)
    res = together.train_step(layout, src, tgt)
    assert sorted(res.slots.tolist()) == list(range(6)) and bool(res.ok.all())
    for s in range(6):
        own = BatchLayout.from_slots([x if x == s else -1 for x in slots])
        torch.testing.assert_close(pred[layout.row_group == layout.slot_list.index(s)], alone.predict(own, src))
        solo = alone.train_step(own, src, tgt)
        torch.testing.assert_close(res.loss[res.slots == s], solo.loss)
    for k in together.params:
        torch.testing.assert_close(together.params[k], alone.params[k])


def test_windows_cover_live_slots_so_padding_stays_below_twice_the_rows():
    """Two n = 256 groups at slots 0 and 31, nothing between: the packed rows of prediction
    and of training are at most twice the 512 real ones (not 32 x 256 over the slot range),
    and each group predicts and trains as if alone."""
    cfg = ESampConfig(max_groups=32, distiller="lowrank", rank=4, seed=1)
    bank, alone = DistillerBank(cfg, hidden=8), DistillerBank(cfg, hidden=8)
    packed, forward = [], bank.arch.forward
    bank.arch.forward = lambda p, x: packed.append(x.shape[0] * x.shape[1]) or forward(p, x)  # x: (w, R, D)
    layout = BatchLayout.from_slots([0] * 256 + [31] * 256 + [-1])
    x, y = torch.randn(513, 8), torch.randn(513, 8)
    pred = bank.predict(layout, x)
    assert sum(packed) <= 2 * 512
    packed.clear()
    bank.train_step(layout, x, y)
    assert sum(packed) <= 2 * 512
    for slot, rows in ((0, slice(0, 256)), (31, slice(256, 512))):
        own = BatchLayout.from_slots([slot] * 256)
        torch.testing.assert_close(pred[rows], alone.predict(own, x[rows]), rtol=0, atol=0)
        alone.train_step(own, x[rows], y[rows])
    for k in bank.params:
        torch.testing.assert_close(bank.params[k], alone.params[k])
