"""The ``adapter`` distiller (core/distiller.py, core/bank.py): a per-group rank-r block on one
shared, frozen ``mlp`` base. Oracles: the architecture written out in float64 here, one
step of torch.optim.SGD with clip_grad_norm_ in float64, a hand count of the parameters, and
the base's matrix products counted from outside while the bank predicts."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sglang_esamp.core import BatchLayout, DistillerBank, ESampConfig

D, WIDTH, R = 16, 24, 4


def rms(x):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def base_stream(base, x):
    """The mlp's two residual SwiGLU blocks, float64."""
    for b in range(2):
        n = rms(x)
        x = x + (torch.nn.functional.silu(n @ base[f"b{b}.gate"]) * (n @ base[f"b{b}.up"])) @ base[f"b{b}.down"]
    return x


def adapter(p, base, x):
    """rms(z + ((n A) * silu(n G + g)) B) * gain, z the base's stream (x without a base); float64, one group."""
    n = rms(x)
    z = x if base is None else base_stream(base, x)
    return rms(z + ((n @ p["a"]) * torch.nn.functional.silu(n @ p["gate"] + p["gate_bias"])) @ p["b"]) * p["out_gain"]


def random_base(seed=0):
    g = torch.Generator().manual_seed(seed)
    matrices = (("gate", (D, WIDTH)), ("up", (D, WIDTH)), ("down", (WIDTH, D)))
    shapes = {"out_gain": (D,), **{f"b{b}.{m}": s for b in range(2) for m, s in matrices}}
    return {k: (torch.rand(1, *s, generator=g) * 2 - 1) / math.sqrt(s[0]) + (1.0 if k == "out_gain" else 0.0) for k, s in shapes.items()}


def bank_with_base(**cfg):
    base = random_base()
    return DistillerBank(ESampConfig(distiller="adapter", max_groups=3, intermediate=WIDTH, rank=R, **cfg), hidden=D, base=base), base


def f64(params, i=0):
    return {k: v[i].double() for k, v in params.items()}


def check_a_new_group_predicts_the_base(bank, base):
    x = torch.randn(5, D)
    want = rms(base_stream(f64(base), x.double())) * base["out_gain"][0].double()  # the mlp base's own prediction
    torch.testing.assert_close(bank.predict(BatchLayout.from_slots([2] * 5), x).double(), want, rtol=1e-5, atol=1e-5)


def test_a_new_group_predicts_what_the_base_does():
    check_a_new_group_predicts_the_base(*bank_with_base())


def train_two_groups(bank, slots):
    """Three steps on random rows: three of group ``slots[0]``, two of ``slots[1]``; their weights."""
    layout = BatchLayout.from_slots([slots[0]] * 3 + [slots[1]] * 2)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        bank.train_step(layout, torch.randn(5, D, generator=g), torch.randn(5, D, generator=g))
    return layout, g, bank.read(torch.tensor(slots))[0]


def test_the_adapter_is_its_definition_after_training():
    bank, base = bank_with_base(sgd_lr=0.5)
    layout, g, params = train_two_groups(bank, [0, 1])
    assert params["b"].abs().sum() > 0  # the blocks have moved off zero
    x = torch.randn(5, D, generator=g)
    want = torch.cat([adapter(f64(params, 0), f64(base), x[:3].double()), adapter(f64(params, 1), f64(base), x[3:].double())])
    torch.testing.assert_close(bank.predict(layout, x).double(), want, rtol=1e-5, atol=1e-5)


def test_without_a_base_it_is_a_lowrank_block_on_the_input():
    bank = DistillerBank(ESampConfig(distiller="adapter", max_groups=2, intermediate=WIDTH, rank=R, sgd_lr=0.5), hidden=D)
    g = torch.Generator().manual_seed(2)
    layout = BatchLayout.from_slots([1, 1])
    bank.train_step(layout, torch.randn(2, D, generator=g), torch.randn(2, D, generator=g))
    params, _ = bank.read(torch.tensor([1]))
    x = torch.randn(2, D, generator=g)
    torch.testing.assert_close(bank.predict(layout, x).double(), adapter(f64(params), None, x.double()), rtol=1e-5, atol=1e-5)


def check_sgd_steps_on_a_frozen_base(bank, base, forward):
    """Three steps of slot 1 against torch.optim.SGD (lr 0.5, clip 0.05, which must act) on
    ``forward(params, base, x)`` in float64; the shared base never trains."""
    frozen = {k: v.clone() for k, v in bank.base.items()}
    layout = BatchLayout.from_slots([1, 1, 1, 1])
    ref = {k: torch.nn.Parameter(v) for k, v in f64(bank.read(torch.tensor([1]))[0]).items()}
    opt = torch.optim.SGD(ref.values(), lr=0.5)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        x, y = torch.randn(4, D, generator=g), torch.randn(4, D, generator=g)
        bank.train_step(layout, x, y)
        opt.zero_grad()
        ((forward(ref, f64(base), x.double()) - y.double()) ** 2).sum(-1).mean().backward()
        assert torch.nn.utils.clip_grad_norm_(ref.values(), 0.05) > 0.05  # the clip acted
        opt.step()
    got, steps = bank.read(torch.tensor([1]))
    assert steps.tolist() == [3.0]
    for k in ref:
        torch.testing.assert_close(got[k][0].double(), ref[k].detach(), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(bank.base[k], frozen[k]) for k in frozen)


def test_an_sgd_step_trains_the_block_only_as_torch_sgd_does():
    check_sgd_steps_on_a_frozen_base(*bank_with_base(sgd_lr=0.5, grad_clip=0.05), adapter)


def test_a_group_owns_a_few_percent_of_an_mlp():
    d, r, i = 4096, 64, 384
    adapter_bank = DistillerBank(ESampConfig(distiller="adapter", max_groups=1, intermediate=i, rank=r), hidden=d, device="meta")
    mlp_bank = DistillerBank(ESampConfig(distiller="mlp", max_groups=1, intermediate=i), hidden=d, device="meta")
    assert adapter_bank.bytes_per_group == (3 * d * r + r + d) * 4 + 4  # A, G, B, the gate's bias, the gain; fp32; SGD
    assert mlp_bank.bytes_per_group == (2 * 3 * d * i + d) * 4 + 4
    assert adapter_bank.bytes_per_group < mlp_bank.bytes_per_group / 10


class BaseProducts(TorchDispatchMode):
    """The output shapes of the matrix products that take one of the base's weights."""

    def __init__(self, weights):
        super().__init__()
        self.ptrs, self.shapes = {w.data_ptr() for w in weights}, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.bmm, torch.ops.aten.mm) and any(a.data_ptr() in self.ptrs for a in args):
            self.shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("groups", [1, 3])
def test_the_base_runs_once_over_every_groups_rows(groups):
    """Two blocks of three matrices: six products whatever the number of groups, each over all
    of the groups' rows at once (a batch of one, not one per group)."""
    bank, _ = bank_with_base()
    with BaseProducts([v for k, v in bank.base.items() if k != "out_gain"]) as seen:
        bank.predict(BatchLayout.from_slots([s for s in range(groups) for _ in range(4)]), torch.randn(4 * groups, D))
    assert len(seen.shapes) == 6 and all(shape[0] == 1 and shape[1] == 4 * groups for shape in seen.shapes), seen.shapes


def test_a_base_of_the_adapters_own_shape_is_refused():
    bank, _ = bank_with_base()
    with pytest.raises(ValueError, match="does not fit"):
        bank.set_base({k: v[:1] for k, v in bank.params.items()})  # an adapter's block is not a base
