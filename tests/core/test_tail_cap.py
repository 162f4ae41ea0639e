"""The tail cap (core/tail_cap.py) against a float64 reference written here.

The reference builds the capped distribution from its definition: tail tokens (untilted
probability below floor x the top's at temperature T) keep their untilted logits, the rest
take x + t, and if the tail's total probability then exceeds the untilted total, the tail is
scaled down to exactly that total with its internal ratios kept.
"""

from __future__ import annotations

import torch

from sglang_esamp.core.head import Head
from sglang_esamp.core.tail_cap import TailCap
from sglang_esamp.core.tilt import tilt_dense


def _reference(x: torch.Tensor, t: torch.Tensor, temps: torch.Tensor, floor: float) -> torch.Tensor:
    x, t, temps = x.double(), t.double(), temps.double().unsqueeze(-1)
    p0 = torch.softmax(x / temps, -1)
    tail = p0 < floor * p0.max(-1, keepdim=True).values
    w = torch.exp(torch.where(tail, x, x + t) / temps)  # unnormalised tilted weights (no overflow at these scales)
    odds0 = (p0 * tail).sum(-1, keepdim=True) / (p0 * ~tail).sum(-1, keepdim=True)
    odds1 = (w * tail).sum(-1, keepdim=True) / (w * ~tail).sum(-1, keepdim=True)
    w = torch.where(tail & (odds1 > odds0), w * odds0 / odds1, w)  # the tail back to its untilted odds
    return w / w.sum(-1, keepdim=True)


def _case(seed: int, n: int = 6, v: int = 300):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, v, generator=gen) * 3
    t = torch.randn(n, v, generator=gen) * 2 - 1.5 * torch.softmax(x, -1) * v / 10  # lowers the familiar tokens
    temps = torch.rand(n, generator=gen) + 0.5
    return x, t, temps


def _off_the_boundary(x: torch.Tensor, temps: torch.Tensor, floor: float) -> torch.Tensor:
    """x with no token within 1e-3 (log scale) of the floor, where float32 and float64 may
    disagree on which side a token is."""
    s = x.double() / temps.double().unsqueeze(-1)
    r = s - s.max(-1, keepdim=True).values - torch.log(torch.tensor(floor, dtype=torch.float64))
    near = r.abs() < 1e-3
    return torch.where(near, x - 0.01 * temps.unsqueeze(-1), x)


def test_capped_distribution_matches_the_reference():
    for seed in range(5):
        x, t, temps = _case(seed)
        for floor in (0.01, 0.1, 0.5):
            x = _off_the_boundary(x, temps, floor)
            cap = TailCap(floor)
            ref = cap.reference(x, temps)
            tilted = torch.where(ref.tail, x, x + t)
            cap.apply(tilted, ref, temps)
            got = torch.softmax(tilted.double() / temps.double().unsqueeze(-1), -1)
            want = _reference(x, t, temps, floor)
            assert torch.allclose(got, want, atol=1e-6, rtol=1e-4), (seed, floor, (got - want).abs().max())


def test_no_tail_token_gains_over_plain_sampling():
    x, t, temps = _case(7)
    cap = TailCap(0.05)
    ref = cap.reference(x, temps)
    tilted = cap.apply(torch.where(ref.tail, x, x + t), ref, temps)
    p0 = torch.softmax(x.double() / temps.double().unsqueeze(-1), -1)
    p = torch.softmax(tilted.double() / temps.double().unsqueeze(-1), -1)
    assert bool((p[ref.tail] <= p0[ref.tail] * (1 + 1e-4) + 1e-9).all())
    assert int(ref.tail.sum()) > 0
    uncapped = torch.softmax(torch.where(ref.tail, x, x + t).double() / temps.double().unsqueeze(-1), -1)
    assert bool(((uncapped - p0) * ref.tail).sum(-1).max() > 1e-3)  # the case does raise the tail without the cap


def test_dense_tilt_leaves_the_tail_untilted():
    gen = torch.Generator().manual_seed(3)
    v, d, n = 200, 16, 4
    head = Head(torch.randn(v, d, generator=gen))
    h, h_hat = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
    x = (h @ head.weight.t()).float()
    beta = torch.full((n,), 0.5)
    tail = torch.rand(n, v, generator=gen) < 0.5
    full = tilt_dense(x, h, h_hat, head, beta, "paper")
    part = tilt_dense(x, h, h_hat, head, beta, "paper", untilted=tail)
    want = torch.where(tail, x.double(), x.double() + 0.5 * ((h - h_hat).double() @ head.weight.double().t()))
    assert torch.allclose(part.double(), want, atol=1e-4)
    assert not torch.allclose(full, part)


def test_off_changes_nothing_and_a_bad_floor_is_refused():
    x, t, temps = _case(1)
    assert TailCap(0.0).reference(x, temps) is None
    for bad in (-0.1, 1.0):
        try:
            TailCap(bad)
        except ValueError as exc:
            assert "floor" in str(exc)
        else:
            raise AssertionError(bad)
