"""The tilt's three forms against a dense float64 reference."""

import pytest
import torch

from sglang_esamp.core import cap_stop_mass, mix_hidden, tilt_candidates, tilt_dense, tilt_logits

N, V, D = 6, 50, 16


@pytest.fixture()
def case():
    g = torch.Generator().manual_seed(0)
    head = torch.randn(V, D, generator=g)
    h = torch.randn(N, D, generator=g)
    h_hat = torch.randn(N, D, generator=g)
    beta = torch.tensor([0.0, 0.25, 0.5, 1.0, 0.0, 4.0])
    return head, h, h_hat, beta


def reference(head, h, h_hat, beta):
    head, h, h_hat, beta = (t.double() for t in (head, h, h_hat, beta))
    return (1 + beta[:, None]) * (h @ head.T) - beta[:, None] * (h_hat @ head.T)


def test_beta_zero_is_bit_identical(case):
    head, h, h_hat, _ = case
    logits = h @ head.T
    logits[0, 3] = float("-inf")  # a grammar mask survives untouched
    zero = torch.zeros(N)
    keep = torch.rand(N, V) > 0.5
    assert torch.equal(tilt_dense(logits, h_hat, head, zero), logits)
    assert torch.equal(tilt_candidates(logits, h_hat, head, zero, keep), logits)
    assert torch.equal(mix_hidden(h, h_hat, zero), h)


def test_dense_matches_reference(case):
    head, h, h_hat, beta = case
    out = tilt_dense(h @ head.T, h_hat, head, beta)
    torch.testing.assert_close(out.double(), reference(head, h, h_hat, beta), rtol=1e-5, atol=1e-4)


def test_latent_mixing_matches_reference(case):
    head, h, h_hat, beta = case
    out = mix_hidden(h, h_hat, beta) @ head.T
    torch.testing.assert_close(out.double(), reference(head, h, h_hat, beta), rtol=1e-5, atol=1e-4)


def test_candidates_match_reference_on_kept_tokens(case):
    head, h, h_hat, beta = case
    logits = h @ head.T
    keep = torch.zeros(N, V, dtype=torch.bool)
    keep[:, :7] = True
    keep[2, 7:20] = True  # rows keep different counts
    out = tilt_candidates(logits, h_hat, head, beta, keep)
    ref = reference(head, h, h_hat, beta)
    tilted = beta > 0
    torch.testing.assert_close(out[tilted][keep[tilted]].double(), ref[tilted][keep[tilted]], rtol=1e-5, atol=1e-4)
    assert torch.isneginf(out[tilted][~keep[tilted]]).all()
    # the two exact forms agree with each other wherever both define the value
    dense = tilt_dense(logits, h_hat, head, beta, keep)
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-4)


def test_tilt_logits_formula_and_keep_mask():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    dist = torch.tensor([[0.0, 2.0, 5.0]])
    keep = torch.tensor([[True, True, False]])
    out = tilt_logits(logits, dist, torch.tensor([0.5]), keep)
    assert out.tolist() == [[1.5, 2.0, float("-inf")]]


def test_non_finite_prediction_leaves_row_untilted(case):
    head, h, h_hat, beta = case
    h_hat = h_hat.clone()
    h_hat[1, 0] = float("nan")
    h_hat[3, 2] = float("inf")
    logits = h @ head.T
    out = tilt_dense(logits, h_hat, head, beta)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], logits[1]) and torch.equal(out[3], logits[3])
    mixed = mix_hidden(h, h_hat, beta)
    assert torch.isfinite(mixed).all() and torch.equal(mixed[1], h[1])
    keep = torch.ones(N, V, dtype=torch.bool)
    assert torch.equal(tilt_candidates(logits, h_hat, head, beta, keep)[1], logits[1])


def test_greedy_argmax_moves_with_beta():
    head = torch.eye(3)
    h = torch.tensor([[2.0, 1.9, 0.0]])
    h_hat = torch.tensor([[2.0, 0.0, 0.0]])  # the distiller already "knows" token 0
    out = tilt_dense(h @ head.T, h_hat, head, torch.tensor([0.25]))
    assert int(out.argmax()) == 1 and int((h @ head.T).argmax()) == 0


def test_residual_tilt_ignores_what_an_affine_fit_explains():
    from sglang_esamp.core.tilt import residual, tilt_logits

    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    flat = 0.4 * logits + 1.5  # a flattened copy: the paper's tilt sharpens, the residual does nothing
    beta = torch.tensor([0.5, 1.0, 2.0])
    paper = tilt_logits(logits, flat, beta)
    assert torch.allclose(paper, logits * (1 + 0.6 * beta).unsqueeze(-1) - 1.5 * beta.unsqueeze(-1), atol=1e-5)
    assert torch.allclose(tilt_logits(logits, flat, beta, mode="residual"), logits, atol=1e-5)
    bump = flat.clone()
    bump[:, 7] -= 3.0  # the distiller underrates token 7: the residual tilt raises it, and only it stands out
    out = tilt_logits(logits, bump, beta, mode="residual")
    delta = out - logits
    assert (delta[:, 7] > 0).all() and (delta[:, 7] > 5 * delta[:, torch.arange(50) != 7].abs().max(-1).values).all()
    valid = torch.ones_like(logits, dtype=torch.bool)
    valid[:, 40:] = False
    r = residual(logits, bump, valid)
    assert (r[:, 40:] == 0).all()


def test_residual_candidates_match_dense_on_the_kept_set():
    from sglang_esamp.core.tilt import tilt_candidates, tilt_dense

    torch.manual_seed(2)
    head = torch.randn(30, 8)
    h, h_hat = torch.randn(2, 8), torch.randn(2, 8)
    logits = h @ head.T
    keep = logits >= logits.topk(6, -1).values[:, -1:]
    beta = torch.tensor([0.5, 0.25])
    dense = tilt_dense(logits, h_hat, head, beta, keep=keep, mode="residual")
    cand = tilt_candidates(logits, h_hat, head, beta, keep, mode="residual")
    assert torch.allclose(dense, cand, atol=1e-5)
    assert torch.equal(torch.isfinite(cand), keep)


def test_residual_mix_in_hidden_space_matches_the_dense_residual(case):
    from sglang_esamp.core import head_gram, mix_residual

    head, h, h_hat, beta = case
    mixed, shift = mix_residual(h, h_hat, beta, head_gram(head), head.mean(0))
    dense = tilt_dense(h @ head.T, h_hat, head, beta, mode="residual")
    torch.testing.assert_close(mixed @ head.T, dense + shift[:, None], rtol=1e-4, atol=1e-4)
    assert torch.equal(mixed[beta == 0], h[beta == 0]) and (shift[beta == 0] == 0).all()
    # a prediction that is an affine copy of the model's state's logits (a flattened one) does nothing
    flat_mixed, flat_shift = mix_residual(h, 0.4 * h, beta, head_gram(head), head.mean(0))
    torch.testing.assert_close(flat_mixed @ head.T, h @ head.T + flat_shift[:, None], rtol=1e-4, atol=1e-4)
    h_hat = h_hat.clone()
    h_hat[2, 0] = float("nan")
    mixed, shift = mix_residual(h, h_hat, beta, head_gram(head), head.mean(0))
    assert torch.equal(mixed[2], h[2]) and shift[2] == 0


def _stop_mass(logits, stop, temp):
    scaled = logits / temp.view(-1, 1)
    return (torch.logsumexp(scaled[:, stop], -1) - torch.logsumexp(scaled, -1)).exp()


def test_stop_mass_cap_restores_the_untilted_stop_probability():
    torch.manual_seed(3)
    stop = torch.tensor([2, 7])
    before = torch.randn(4, 16)
    temp = torch.tensor([1.0, 0.5, 2.0, 1.0])
    tilted = before - torch.rand(4, 16) * 3  # every token lowered: the stops' share grows even with logits capped
    tilted[:, stop] = before[:, stop]
    tilted[3] = before[3]
    tilted[3, stop] -= 1.0  # this row's stop probability went down: no cap
    out = cap_stop_mass(tilted, before, stop, temp)
    p_before, p_tilted, p_out = (_stop_mass(x, stop, temp) for x in (before, tilted, out))
    assert (p_tilted[:3] > p_before[:3] * 1.05).all()  # the case the cap is for
    torch.testing.assert_close(p_out[:3], p_before[:3])
    assert torch.equal(out[3], tilted[3])
    others = torch.ones(16, dtype=torch.bool)
    others[stop] = False
    assert torch.equal(out[:, others], tilted[:, others])  # only the stop logits move, by one common amount
    drop = tilted[:3, stop] - out[:3, stop]
    torch.testing.assert_close(drop[:, 0], drop[:, 1])


def test_stop_mass_cap_reads_the_budget_within_the_kept_set():
    stop = torch.tensor([0])
    before = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0]])
    keep = torch.tensor([[True, True, True, False, False]])
    tilted = torch.tensor([[1.0, 2.0, 1.5, float("-inf"), float("-inf")]])
    out = cap_stop_mass(tilted, before, stop, torch.ones(1), keep)
    budget = torch.softmax(before.masked_fill(~keep, float("-inf")), -1)[0, 0]
    torch.testing.assert_close(torch.softmax(out, -1)[0, 0], budget)
    # no stop mass before (the stop outside the kept set), or only stops kept: finite, unchanged
    gone = cap_stop_mass(tilted, before, stop, torch.ones(1), torch.tensor([[False, True, True, False, False]]))
    only = cap_stop_mass(tilted.masked_fill(torch.arange(5) > 0, float("-inf")), before, stop, torch.ones(1))
    assert torch.equal(gone, tilted) and only[0, 0] == 1.0
