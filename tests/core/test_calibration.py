"""The calibrated warm start: fit_base learns the map, and the bank starts groups from it."""

import pytest
import torch

from sglang_esamp.core import BatchLayout, DistillerBank, ESampConfig
from sglang_esamp.core.calibration import fit_base, rel_err
from sglang_esamp.core.distiller import build_architecture

from .test_bank import D, make_problem


def test_fit_base_learns_the_map_and_measures_held_out_rows():
    x, y = make_problem(4, rows=2000)()
    arch = build_architecture("mlp", D, 64, 8)
    fit = fit_base(arch, x, y, None, steps=300, batch=256, lr=3e-3, seed=0)
    assert fit.train_rows == 1800 and fit.heldout_rows == 200
    assert {k: tuple(v.shape) for k, v in fit.params.items()} == {k: (1, *s) for k, s in arch.shapes().items()}
    assert fit.rel_err < 0.2 * fit.rel_err_init, (fit.rel_err_init, fit.rel_err)
    assert fit.rel_err == pytest.approx(rel_err(arch, fit.params, x[1800:], y[1800:]))
    again = fit_base(arch, x, y, None, steps=300, batch=256, lr=3e-3, seed=0)
    assert all(torch.equal(again.params[k], fit.params[k]) for k in fit.params)  # reproducible


def test_fit_base_rejects_mismatched_rows():
    arch = build_architecture("lowrank", D, 64, 8)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_base(arch, torch.zeros(10, D), torch.zeros(9, D), None)


def test_new_groups_start_from_the_base_with_a_fresh_optimizer():
    cfg = ESampConfig(max_groups=3, intermediate=16, lr=1e-2)
    x, y = make_problem(5, rows=2000)()
    arch = build_architecture("mlp", D, 16, 8)
    base = fit_base(arch, x, y, None, steps=300, batch=256, lr=3e-3, seed=1).params
    bank = DistillerBank(cfg, hidden=D, base=base)
    for k, v in bank.params.items():  # every slot starts as the base
        assert all(torch.equal(v[s], base[k][0]) for s in range(3))
    layout = BatchLayout.from_slots([1] * 10)
    for _ in range(3):
        bank.train_step(layout, x[:10], y[:10])
    assert not torch.equal(bank.params["b0.gate"][1], base["b0.gate"][0])
    bank.reset([1])
    assert torch.equal(bank.params["b0.gate"][1], base["b0.gate"][0])
    assert bank.step_count.tolist() == [0.0, 0.0, 0.0]
    assert float(bank.exp_avg["b0.gate"][1].abs().sum()) == 0.0
    # the warm start predicts well from its first step; the paper's random init does not
    warm = float(bank.train_step(layout, x[1990:], y[1990:]).rel_err[0])
    cold = float(DistillerBank(cfg, hidden=D).train_step(layout, x[1990:], y[1990:]).rel_err[0])
    assert warm < 0.5 * cold, (warm, cold)


def test_a_base_of_another_shape_is_refused():
    base = {k: v[:1] for k, v in DistillerBank(ESampConfig(max_groups=1, intermediate=8), hidden=D).params.items()}
    with pytest.raises(ValueError, match="does not fit this architecture"):
        DistillerBank(ESampConfig(max_groups=2, intermediate=16), hidden=D, base=base)
