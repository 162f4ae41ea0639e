"""Stratified codes (core/strata.py): each row an exact draw, the rows of a group stratified.

Oracles: the distribution itself (chi-square over many independent shifts, with a biased
sampler beside it to show the test's power), the closed form of a shifted grid (a token of
mass w gets floor(n w) or ceil(n w) of n codes), and independent draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from sglang_esamp.core.strata import Strata


def _probs(gen: torch.Generator, v: int, zeros: int = 3) -> torch.Tensor:
    p = torch.rand(v, generator=gen, dtype=torch.float64) ** 3  # a few large tokens and a long tail
    p[torch.randperm(v, generator=gen)[:zeros]] = 0.0  # tokens the filters removed
    return p / p.sum()


def _draw(p: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    strata = Strata(len(codes), "cpu")
    rows = torch.arange(len(codes))
    strata.start(rows, codes, 0.0)
    return strata.pick(p.expand(len(codes), -1).float(), rows)


@pytest.mark.parametrize("v", [12, 257, 1024])  # blocks of 4, of 1 (an odd vocabulary) and of 256 tokens
def test_one_row_is_an_exact_draw(v):
    gen = torch.Generator().manual_seed(0)
    p = _probs(gen, v, zeros=v // 4)
    p[: v // 2] *= 40  # most of the mass on a few tokens, so that every count is large
    p /= p.sum()
    keep = p > 2e-4  # tokens with an expected count of at least 8
    p[~keep] = 0.0
    p /= p.sum()
    codes = torch.rand(40_000, generator=gen, dtype=torch.float64)  # one independent shift per trial
    counts = np.bincount(_draw(p, codes).numpy(), minlength=v)
    support = p.numpy() > 0
    assert counts[~support].sum() == 0  # a removed token is never drawn
    expected = p.numpy()[support] * len(codes)
    assert chisquare(counts[support], expected).pvalue > 1e-3
    biased = np.bincount(_draw(p, codes**1.1).numpy(), minlength=v)  # a code that is not uniform: the test must see it
    assert chisquare(biased[support], expected).pvalue < 1e-6


def test_rescaled_code_draws_the_next_step_exactly():
    """Two steps with one code: the pair's distribution is p1(a) p2(b | a)."""
    gen = torch.Generator().manual_seed(1)
    v, trials = 6, 60_000
    p1 = _probs(gen, v, zeros=1)
    p2 = torch.stack([_probs(gen, v, zeros=1) for _ in range(v)])  # (v, v): the next step's row depends on the first token
    strata = Strata(trials, "cpu")
    rows = torch.arange(trials)
    strata.start(rows, torch.rand(trials, generator=gen, dtype=torch.float64), 0.0)
    a = strata.pick(p1.expand(trials, -1).float(), rows)
    b = strata.pick(p2[a].float(), rows)
    joint = np.bincount((a * v + b).numpy(), minlength=v * v)
    expected = (p1.unsqueeze(1) * p2).reshape(-1).numpy() * trials
    support = expected > 0
    assert joint[~support].sum() == 0
    assert chisquare(joint[support], expected[support]).pvalue > 1e-3


def test_group_codes_are_stratified():
    """n codes on a shifted grid: every token of mass w gets floor(n w) or ceil(n w) rows."""
    gen = torch.Generator().manual_seed(2)
    n = 8
    for trial in range(200):
        v = (30, 1024)[trial % 2]
        p = _probs(gen, v, zeros=5)
        shift = float(torch.rand((), generator=gen, dtype=torch.float64))
        strata = Strata(n, "cpu")
        rows = torch.arange(n)
        strata.start(rows, torch.arange(n, dtype=torch.float64) / n, shift)
        counts = np.bincount(strata.pick(p.expand(n, -1), rows).numpy(), minlength=v)
        w = p.numpy() * n
        assert np.all(counts >= np.floor(w - 1e-9)) and np.all(counts <= np.ceil(w + 1e-9)), (trial, counts, w)


def test_more_distinct_tokens_than_independent_draws():
    gen = torch.Generator().manual_seed(3)
    n, trials = 10, 300
    strat, indep = [], []
    for _ in range(trials):
        p = _probs(gen, 40, zeros=0)
        shift = float(torch.rand((), generator=gen, dtype=torch.float64))
        strata = Strata(n, "cpu")
        rows = torch.arange(n)
        strata.start(rows, torch.arange(n, dtype=torch.float64) / n, shift)
        strat.append(len(set(strata.pick(p.expand(n, -1), rows).tolist())))
        indep.append(len(set(torch.multinomial(p, n, replacement=True, generator=gen).tolist())))
    assert np.mean(strat) > np.mean(indep) + 0.5, (np.mean(strat), np.mean(indep))


def test_bits_are_counted_and_a_spent_code_is_redrawn_exactly():
    gen = torch.Generator().manual_seed(4)
    p = _probs(gen, 12)
    trials = 40_000
    strata = Strata(trials, "cpu", budget=20.0, seed=5)
    rows = torch.arange(trials)
    strata.start(rows, torch.rand(trials, generator=gen, dtype=torch.float64), 0.0)
    first = strata.pick(p.expand(trials, -1).float(), rows)
    expected_bits = -torch.log2(p[first])  # closed form: log2(1 / p) of the token taken
    assert torch.allclose(strata.bits, expected_bits, rtol=1e-6)  # probs went in as float32
    strata.bits.fill_(20.0)  # every code spent: the next pick redraws it
    second = strata.pick(p.expand(trials, -1).float(), rows)
    assert float(strata.bits.max()) < 20.0
    counts = np.bincount(second.numpy(), minlength=12)
    support = p.numpy() > 0
    assert chisquare(counts[support], p.numpy()[support] * trials).pvalue > 1e-3
    # the redrawn code is independent of the spent one: the pair is a product of marginals
    joint = np.bincount((first * 12 + second).numpy(), minlength=144).reshape(12, 12)[support][:, support]
    assert chisquare(joint.reshape(-1), (np.outer(p.numpy(), p.numpy())[support][:, support] * trials).reshape(-1)).pvalue > 1e-3


def test_a_code_near_one_never_takes_a_removed_last_token():
    p = torch.tensor([0.25, 0.75, 0.0, 0.0], dtype=torch.float64)
    codes = torch.tensor([1.0 - 2.0**-53, 1.0 - 1e-12, 0.0, 0.2499999], dtype=torch.float64)
    strata = Strata(4, "cpu")
    rows = torch.arange(4)
    strata.start(rows, codes, 0.0)
    assert strata.pick(p.expand(4, -1), rows).tolist() == [1, 1, 0, 0]
    assert bool(((strata.code >= 0) & (strata.code < 1)).all())
