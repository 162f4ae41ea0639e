"""The ``tail`` distiller (core/distiller.py, core/bank.py): a per-group delta on the down
projection of one shared, frozen ``mlp`` base's last block. Oracles: the ``mlp`` written out
in float64 with that projection's first ``units`` rows replaced by W + delta (the merged
weights a group would own as a full copy), one step of torch.optim.SGD with
clip_grad_norm_ in float64, a hand count of the parameters, and the base's matrix products
counted from outside while the bank predicts."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from sglang_esamp.core import BatchLayout, DistillerBank, ESampConfig

from .test_adapter import (
    BaseProducts,
    base_stream,
    check_a_new_group_predicts_the_base,
    check_sgd_steps_on_a_frozen_base,
    f64,
    random_base,
    rms,
    train_two_groups,
)

D, WIDTH, UNITS = 16, 24, 10


def merged(p, base):
    """The full mlp a group's tail amounts to: the base, its last down projection's first
    UNITS rows plus the group's delta, and the group's gain. float64, one group."""
    weights = dict(base)
    down = base["b1.down"].clone()
    down[:UNITS] += p["down"]
    weights["b1.down"] = down
    return weights, p["out_gain"]


def tail(p, base, x):
    weights, gain = merged(p, base)
    return rms(base_stream(weights, x)) * gain


def bank_with_base(**cfg):
    base = random_base()
    return DistillerBank(ESampConfig(distiller="tail", max_groups=3, intermediate=WIDTH, tail_units=UNITS, **cfg),
                         hidden=D, base=base), base


def test_a_new_group_predicts_what_the_base_does():
    check_a_new_group_predicts_the_base(*bank_with_base())


def test_each_group_predicts_as_its_merged_mlp_after_training():
    bank, base = bank_with_base(sgd_lr=0.5)
    layout, g, params = train_two_groups(bank, [0, 2])
    assert params["down"].abs().sum() > 0 and not torch.equal(params["down"][0], params["down"][1])
    x = torch.randn(5, D, generator=g)
    want = torch.cat([tail(f64(params, 0), f64(base), x[:3].double()), tail(f64(params, 1), f64(base), x[3:].double())])
    torch.testing.assert_close(bank.predict(layout, x).double(), want, rtol=1e-5, atol=1e-5)


def test_an_sgd_step_trains_the_delta_and_gain_only_as_torch_sgd_does():
    check_sgd_steps_on_a_frozen_base(*bank_with_base(sgd_lr=0.5, grad_clip=0.05), tail)


def test_a_group_owns_under_a_tenth_of_an_mlp():
    d, i, u = 4096, 384, 192
    tail_bank = DistillerBank(ESampConfig(distiller="tail", max_groups=1, intermediate=i, tail_units=u), hidden=d, device="meta")
    mlp_bank = DistillerBank(ESampConfig(distiller="mlp", max_groups=1, intermediate=i), hidden=d, device="meta")
    assert tail_bank.bytes_per_group == (u * d + d) * 4 + 4  # the delta and the gain, fp32, SGD, and a step count
    assert mlp_bank.bytes_per_group == (2 * 3 * d * i + d) * 4 + 4
    assert tail_bank.bytes_per_group < mlp_bank.bytes_per_group / 10


@pytest.mark.parametrize("groups", [1, 3])
def test_the_base_runs_once_over_every_groups_rows(groups):
    bank, _ = bank_with_base()
    with BaseProducts([v for k, v in bank.base.items() if k != "out_gain"]) as seen:
        bank.predict(BatchLayout.from_slots([s for s in range(groups) for _ in range(4)]), torch.randn(4 * groups, D))
    assert len(seen.shapes) == 6 and all(shape[0] == 1 and shape[1] == 4 * groups for shape in seen.shapes), seen.shapes


def test_without_a_saved_base_the_bank_runs_on_a_seeded_random_one_until_it_gets_one():
    """Two banks with one seed (two tensor-parallel ranks) hold the same random base, made as
    the paper's init makes an mlp (matrices within +-1/sqrt(fan_in)); set_base replaces it."""
    cfg = ESampConfig(distiller="tail", max_groups=2, intermediate=WIDTH, tail_units=UNITS, seed=4)
    one, two = DistillerBank(cfg, hidden=D), DistillerBank(cfg, hidden=D)
    assert set(one.base) == set(random_base()) and all(torch.equal(one.base[k], two.base[k]) for k in one.base)
    for k, v in one.base.items():
        if k != "out_gain":
            assert 0 < v.abs().max() <= 1 / v.shape[1] ** 0.5 and v.std() > 0.2 / v.shape[1] ** 0.5
    x = torch.randn(3, D)
    want = rms(base_stream(f64(one.base), x.double())) * one.base["out_gain"][0].double()
    torch.testing.assert_close(one.predict(BatchLayout.from_slots([0] * 3), x).double(), want, rtol=1e-5, atol=1e-5)
    saved = random_base(seed=9)
    one.set_base(saved)
    want = rms(base_stream(f64(saved), x.double())) * torch.ones(D, dtype=torch.float64)  # the gain a group started with
    torch.testing.assert_close(one.predict(BatchLayout.from_slots([0] * 3), x).double(), want, rtol=1e-5, atol=1e-5)


def test_units_beyond_the_intermediate_width_are_refused():
    with pytest.raises(ValueError, match="tail_units"):
        ESampConfig(distiller="tail", intermediate=16, tail_units=17)


class Outputs(TorchDispatchMode):
    """The shapes of every tensor an op makes (views share their input's storage; in-place ops write into it)."""

    def __init__(self):
        super().__init__()
        self.made = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not (func.is_view or func.overloadpacket.__name__.endswith("_") or func.overloadpacket.__name__ in ("detach", "alias")):
            self.made += [tuple(t.shape) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


def test_the_sgd_step_never_makes_a_tensor_of_the_deltas_size():
    """The delta's gradient stays a product of two (groups, rows, .) factors: no op writes a
    (groups, units, D) tensor, the delta itself is updated in place."""
    bank, _ = bank_with_base(sgd_lr=0.5)
    x, y = torch.randn(6, D), torch.randn(6, D)
    before = bank.params["down"].clone()
    with Outputs() as seen:
        bank.train_step(BatchLayout.from_slots([0, 0, 0, 1, 1, 1]), x, y)
    assert not any(shape[-2:] == (UNITS, D) for shape in seen.made), seen.made
    assert not torch.equal(bank.params["down"][:2], before[:2])
