"""The tilt's two forms against a float64 reference of its definition (core/tilt.py), on
heads with and without bias, logit scale and softcapping."""

import math

import pytest
import torch

from sglang_esamp.core import Head, VocabMoments, tilt_candidates, tilt_dense, tilt_plausible
from sglang_esamp.core.tilt import affine_fit, cap_gain, center_on_group

from ..probe.gain_oracle import capped64

N, V, D = 6, 50, 16
HEADS = {
    "plain": {},
    "bias_scale": {"bias": True, "scale": 0.7},
    "softcap": {"bias": True, "softcap": 3.0},
}


def make_head(kind: str, seed: int = 0) -> Head:
    g = torch.Generator().manual_seed(seed)
    spec = HEADS[kind]
    bias = torch.randn(V, generator=g) if spec.get("bias") else None
    return Head(torch.randn(V, D, generator=g), bias, spec.get("scale"), spec.get("softcap"))


def model_logits64(head: Head, x: torch.Tensor) -> torch.Tensor:
    """The head's logits in float64, written out independently of Head.logits."""
    z = x.double() @ head.weight.double().T
    if head.bias is not None:
        z = z + head.bias.double()
    if head.scale is not None:
        z = z * head.scale
    if head.softcap:
        z = head.softcap * torch.tanh(z / head.softcap)
    return z


def reference(x, h, h_hat, head, beta, mode, keep=None):
    """x + beta t in float64, with the residual's fit over the whole vocabulary by lstsq."""
    lm, d = model_logits64(head, h), model_logits64(head, h_hat)
    if mode == "paper":
        t = lm - d
    else:
        t = torch.empty_like(lm)
        for i in range(lm.shape[0]):
            design = torch.stack([lm[i], torch.ones_like(lm[i])], -1)  # (V, 2)
            a, b = torch.linalg.lstsq(design, d[i:i + 1].T).solution.flatten()
            t[i] = a * lm[i] + b - d[i]
    out = x.double() + beta.double()[:, None] * t
    return out if keep is None else out.masked_fill(~keep, float("-inf"))


@pytest.fixture()
def case():
    g = torch.Generator().manual_seed(1)
    h, h_hat = torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)
    beta = torch.tensor([0.0, 0.25, 0.5, 1.0, 0.0, 4.0])
    penalties = torch.randn(N, V, generator=g)  # SGLang's request processing: penalties, logit bias
    penalties[0, 3] = float("-inf")  # and a grammar mask
    return h, h_hat, beta, penalties


def setup(case, kind):
    """The case on a head of ``kind``: its logits ``lm``, the processed ``x``, and the ways to
    call a form: on a linear head with one product (no logits; moments in chunks that do not
    divide V), and on any head from the model's logits."""
    h, h_hat, beta, penalties = case
    head = make_head(kind)
    lm = head.logits(h)
    moments = VocabMoments.of(head, chunk_bytes=7 * 4 * D) if head.linear else None
    return h, h_hat, beta, head, lm + penalties, [(moments, None if head.linear else lm), (None, lm)]


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("mode", ["paper", "residual"])
def test_dense_is_the_definition(case, kind, mode):
    h, h_hat, beta, head, x, calls = setup(case, kind)
    ref = reference(x, h, h_hat, head, beta, mode)
    for moments, given in calls:
        out = tilt_dense(x, h, h_hat, head, beta, mode, moments, given)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(out[beta == 0], x[beta == 0])
        assert torch.isneginf(out[0, 3])


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("mode", ["paper", "residual"])
def test_candidates_are_the_definition_on_the_kept_tokens(case, kind, mode):
    h, h_hat, beta, head, x, calls = setup(case, kind)
    keep = torch.zeros(N, V, dtype=torch.bool)
    keep[:, :2] = True  # two candidates: a fit over the kept tokens alone would be exact, and the tilt zero
    keep[2, 2:20] = True  # rows keep different counts
    ref = reference(x, h, h_hat, head, beta, mode, keep)
    for moments, given in calls:
        out = tilt_candidates(x, h, h_hat, head, beta, keep, mode, moments, given)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(out[beta == 0], x.masked_fill(~keep, float("-inf"))[beta == 0])
        moved = (out - x)[beta > 0][:, :2]  # the two shared candidates
        assert ((moved[:, 0] - moved[:, 1]).abs() > 1e-3).all()  # the tilt changes their odds


@pytest.mark.parametrize("kind", HEADS)
def test_candidates_leave_held_ids_at_their_probability_within_the_kept_set(case, kind):
    """``held`` in the candidate form (the stop ids under ``hold``): within each row's kept set
    a held id keeps its untilted probability at the row's temperature and the other kept
    tokens take the definition's relative odds, in float64."""
    h, h_hat, beta, head, x, calls = setup(case, kind)
    temps = torch.tensor([1.0, 0.7, 1.0, 1.3, 1.0, 0.9])
    t = temps.double()[:, None]
    keep = x >= x.topk(12, -1).values[:, -1:]  # the 12 likeliest of each row
    held = [int(x[2].argmax()), int(x[3].topk(3).indices[-1]), 40]
    inside = lambda v: torch.softmax(v.double().masked_fill(~keep, float("-inf")) / t, -1)  # noqa: E731
    plain, tilted = inside(x), inside(reference(x, h, h_hat, head, beta, "residual"))
    is_held = torch.zeros_like(keep)
    is_held[:, held] = True
    others = keep & ~is_held
    want = torch.where(is_held, plain, tilted / (tilted * others).sum(-1, keepdim=True) * (plain * others).sum(-1, keepdim=True))
    for moments, given in calls:
        out = tilt_candidates(x, h, h_hat, head, beta, keep, "residual", moments, given, torch.tensor(held), temps)
        torch.testing.assert_close(torch.softmax(out.double() / t, -1), want.masked_fill(~keep, 0.0), rtol=1e-4, atol=1e-6)
    assert (tilted - plain)[[2, 3], held[:2]].abs().min() > 1e-3  # the tilt moves them when not held


def test_penalties_and_logit_bias_are_not_scaled_by_the_tilt(case):
    """x + beta t: a perfect distiller (d = l) leaves the processed logits exactly as they are."""
    h, _, beta, penalties = case
    head = make_head("bias_scale")
    lm = head.logits(h)
    x = lm + 5.0 * penalties
    for mode in ("paper", "residual"):
        torch.testing.assert_close(tilt_dense(x, h, h, head, beta, mode, VocabMoments.of(head)), x, rtol=0, atol=1e-4)


def test_vocab_moments_give_the_full_vocabulary_fit(case):
    h, h_hat, _, _ = case
    head = make_head("bias_scale")
    a, b = VocabMoments.of(head, chunk_bytes=7 * 4 * D).fit(h, h_hat)
    a_ref, b_ref = affine_fit(head.logits(h).double(), head.logits(h_hat).double())
    torch.testing.assert_close(a.double(), a_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.double(), b_ref, rtol=1e-4, atol=1e-3)


def test_the_fit_on_a_bf16_head_runs_in_bf16_within_its_rounding():
    """On a bf16 head the moments' Gram matrix is kept in bf16 and the fit's product runs in it:
    a stays within 2e-3 of the float64 fit over the same head's logits (a logit of 10 moves by
    at most 0.02, the size of one bf16 rounding of it)."""
    g = torch.Generator().manual_seed(2)
    head = Head(torch.randn(4000, 64, generator=g).to(torch.bfloat16))
    h = torch.randn(8, 64, generator=g)
    h_hat = h + 0.5 * torch.randn(8, 64, generator=g)
    moments = VocabMoments.of(head)
    assert moments.gram.dtype == torch.bfloat16
    a, b = moments.fit(h, h_hat)
    w = head.weight.double()
    a_ref, b_ref = affine_fit(h.double() @ w.T, h_hat.double() @ w.T)
    torch.testing.assert_close(a.double(), a_ref, rtol=2e-3, atol=0)
    torch.testing.assert_close(b.double(), b_ref, rtol=0, atol=2e-2)


def test_residual_tilt_ignores_what_an_affine_fit_explains():
    head = make_head("plain")
    torch.manual_seed(0)
    h = torch.randn(3, D)
    lm = head.logits(h)
    beta = torch.tensor([0.5, 1.0, 2.0])
    flat = 0.4 * h  # a flattened copy of the model's logits: the paper's tilt sharpens, the residual does nothing
    torch.testing.assert_close(tilt_dense(lm, h, flat, head, beta, "residual", VocabMoments.of(head)), lm, rtol=0, atol=1e-4)
    paper = tilt_dense(lm, h, flat, head, beta, "paper")
    torch.testing.assert_close(paper, lm * (1 + 0.6 * beta)[:, None], rtol=1e-5, atol=1e-4)


def test_non_finite_prediction_leaves_row_untilted(case):
    h, h_hat, beta, _ = case
    head = make_head("plain")
    h_hat = h_hat.clone()
    h_hat[1, 0] = float("nan")
    h_hat[3, 2] = float("inf")
    lm = head.logits(h)
    out = tilt_dense(lm, h, h_hat, head, beta, "paper")
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], lm[1]) and torch.equal(out[3], lm[3])
    keep = torch.rand(N, V) > 0.5
    cand = tilt_candidates(lm, h, h_hat, head, beta, keep, "residual", VocabMoments.of(head))
    assert torch.equal(cand[1], lm[1].masked_fill(~keep[1], float("-inf")))  # untilted, but still within its filters


def test_greedy_argmax_moves_with_beta():
    head = Head(torch.eye(3))
    h = torch.tensor([[2.0, 1.9, 0.0]])
    h_hat = torch.tensor([[2.0, 0.0, 0.0]])  # the distiller already "knows" token 0
    lm = head.logits(h)
    out = tilt_dense(lm, h, h_hat, head, torch.tensor([0.25]), "paper")
    assert int(out.argmax()) == 1 and int(lm.argmax()) == 0


def plausible_reference(x, h, h_hat, head, beta, mode, temps, floor, k, held=()):
    """The plausible form's distribution in float64, from its definition: the tokens among the
    row's k likeliest with p >= floor * p_max at T, less the ``held`` ids, take x + beta t,
    renormalised to their untilted total; every other token keeps its untilted probability."""
    tilted = reference(x, h, h_hat, head, beta, mode)
    t = temps.double()[:, None]
    p = torch.softmax(x.double() / t, -1)
    top = torch.zeros_like(p, dtype=torch.bool).scatter_(1, x.double().topk(min(k, x.shape[-1]), -1).indices, True)
    plausible = top & (p >= floor * p.max(-1, keepdim=True).values)
    plausible[:, list(held)] = False
    q = torch.softmax(torch.where(plausible, tilted / t, torch.tensor(float("-inf"), dtype=torch.float64)), -1)
    return torch.where(plausible, q * (p * plausible).sum(-1, keepdim=True), p), plausible


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("mode", ["paper", "residual"])
@pytest.mark.parametrize("floor, k", [(0.05, 64), (0.3, 20), (0.01, 5)])  # V = 50: 64 covers every token
def test_plausible_is_the_definition(case, kind, mode, floor, k):
    h, h_hat, beta, head, x, calls = setup(case, kind)
    temps = torch.tensor([1.0, 0.7, 1.0, 1.3, 1.0, 0.9])
    want, plausible = plausible_reference(x, h, h_hat, head, beta, mode, temps, floor, k)
    assert (plausible.sum(-1) > 1).any() and (~plausible & torch.isfinite(x)).any()  # the case has both sides
    for moments, given in calls:
        out = tilt_plausible(x.clone(), h, h_hat, head, beta, mode, temps, floor, moments, given, k=k)
        got = torch.softmax(out.double() / temps.double()[:, None], -1)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        assert torch.equal(out[~plausible], x[~plausible])  # the rest keep their very logits
        assert torch.isneginf(out[0, 3])
    moved = (got - torch.softmax(x.double() / temps.double()[:, None], -1)).abs().amax(-1)
    several = plausible.sum(-1) > 1  # a row with one plausible token has nothing to move
    assert (moved[(beta > 0) & several] > 1e-4).all() and (moved[(beta == 0) | ~several] < 1e-6).all()


@pytest.mark.parametrize("kind", HEADS)
def test_plausible_leaves_held_ids_at_their_plain_probability(case, kind):
    """``held`` (the stop ids under the ``hold`` cap): plausible or not, each keeps exactly its
    plain-sampling probability, and the rest of the set is tilted as the definition says, in
    float64; here the tilt would have moved them (without ``held`` their probability changes)."""
    h, h_hat, beta, head, x, calls = setup(case, kind)
    temps = torch.tensor([1.0, 0.7, 1.0, 1.3, 1.0, 0.9])
    t = temps.double()[:, None]
    held = [int(x[3].argmax()), int(x[5].argmax()), 7]  # the top token of rows 3 and 5, and one more
    want, plausible = plausible_reference(x, h, h_hat, head, beta, mode := "residual", temps, 0.05, 64, held)
    plain = torch.softmax(x.double() / t, -1)
    for moments, given in calls:
        free = torch.softmax(tilt_plausible(x.clone(), h, h_hat, head, beta, mode, temps, 0.05, moments, given).double() / t, -1)
        out = tilt_plausible(x.clone(), h, h_hat, head, beta, mode, temps, 0.05, moments, given, held=torch.tensor(held))
        got = torch.softmax(out.double() / t, -1)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got[:, held], plain[:, held], rtol=1e-5, atol=1e-9)
        assert torch.equal(out[:, held], x[:, held])
    assert (free[[3, 5], held[:2]] - plain[[3, 5], held[:2]]).abs().min() > 1e-3  # the tilt moves them when not held
    assert plausible[3].sum() > 1  # a held top token leaves others to tilt


def test_plausible_with_only_a_held_id_plausible_keeps_the_row():
    """A row whose one plausible token is held has an empty set: nothing is tilted, and no NaN
    comes out of the empty set's sums (with the bound on the gain, whose bisection sees it)."""
    head = make_head("plain")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, V, generator=g)
    x[:, 9] = 30.0  # p_max dwarfs every other token: only token 9 is plausible
    h, h_hat = torch.randn(2, D, generator=g), torch.randn(2, D, generator=g)
    out = tilt_plausible(x.clone(), h, h_hat, head, torch.ones(2), "paper", torch.ones(2), 0.05, max_gain=5.0,
                         held=torch.tensor([9]))
    assert torch.equal(out, x)


def entropy64(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-300))).sum(-1)


def rule_case(x, h, h_hat, head, beta, mode):
    """The entropy rules' case: per-row temperatures, the default floor and k, the plausible
    set of the definition, the (N, 1) float64 temperatures and plain sampling's distribution."""
    temps = torch.tensor([1.0, 0.7, 1.0, 1.3, 1.0, 0.9])
    floor, k = 0.05, 64
    _, plausible = plausible_reference(x, h, h_hat, head, beta, mode, temps, floor, k)
    t = temps.double()[:, None]
    return temps, floor, k, plausible, t, torch.softmax(x.double() / t, -1)


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("mode", ["paper", "residual"])
def test_plausible_keeping_entropy(case, kind, mode):
    """With the entropy rule ``keep`` the row's distribution is characterised by three facts, checked in
    float64: it has plain sampling's entropy; within the plausible set its log-probabilities
    are s times the definition's tilted logits plus a constant, s > 0 (a temperature on the
    tilt, nothing else); outside the set, and in the set's total, it is plain sampling's."""
    h, h_hat, beta, head, x, calls = setup(case, kind)
    temps, floor, k, plausible, t, plain = rule_case(x, h, h_hat, head, beta, mode)
    tilted = reference(x, h, h_hat, head, beta, mode) / t
    for moments, given in calls:
        out = tilt_plausible(x.clone(), h, h_hat, head, beta, mode, temps, floor, moments, given, k=k, entropy="keep")
        got = torch.softmax(out.double() / t, -1)
        torch.testing.assert_close(entropy64(got), entropy64(plain), rtol=0, atol=1e-4)
        torch.testing.assert_close((got * plausible).sum(-1), (plain * plausible).sum(-1), rtol=1e-5, atol=1e-6)
        assert torch.equal(out[~plausible], x[~plausible])
        for i in range(N):
            if plausible[i].sum() < 3:
                continue
            y, logq = tilted[i][plausible[i]], torch.log(got[i][plausible[i]])
            design = torch.stack([y, torch.ones_like(y)], -1)
            s, c = torch.linalg.lstsq(design, logq[:, None]).solution.flatten()
            assert s > 0
            torch.testing.assert_close(s * y + c, logq, rtol=0, atol=1e-3)
    free = torch.softmax(tilt_plausible(x.clone(), h, h_hat, head, beta, mode, temps, floor, moments, given, k=k).double() / t, -1)
    tilted_rows = (beta > 0) & (plausible.sum(-1) > 2)
    assert ((entropy64(free) - entropy64(plain)).abs()[tilted_rows] > 1e-3).any()  # without the rule the entropy moves


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("mode", ["paper", "residual"])
def test_plausible_local_rule_removes_the_sharpening(case, kind, mode):
    """With the entropy rule ``local`` the plausible set's log-probabilities move by the
    definition's tilt less its weighted least-squares fit on the row's own scaled logits
    (weights: untilted probabilities; lstsq in float64), so the move has zero
    probability-weighted covariance with those logits; the set's total and the rest are
    plain sampling's."""
    h, h_hat, beta, head, x, calls = setup(case, kind)
    temps, floor, k, plausible, t, plain = rule_case(x, h, h_hat, head, beta, mode)
    move = (reference(x, h, h_hat, head, beta, mode) - x.double()) / t  # (N, V) the definition's tilt, scaled
    for moments, given in calls:
        out = tilt_plausible(x.clone(), h, h_hat, head, beta, mode, temps, floor, moments, given, k=k, entropy="local")
        got = torch.softmax(out.double() / t, -1)
        torch.testing.assert_close((got * plausible).sum(-1), (plain * plausible).sum(-1), rtol=1e-5, atol=1e-6)
        assert torch.equal(out[~plausible], x[~plausible])
        for i in range(N):
            inside = plausible[i]
            if inside.sum() < 3:
                continue
            y, m = x[i][inside].double() / t[i], move[i][inside]
            w = (plain[i][inside] / plain[i][inside].sum()).sqrt()[:, None]
            design = torch.stack([y, torch.ones_like(y)], -1)
            slope = torch.linalg.lstsq(design * w, m[:, None] * w).solution[0]
            want = y + m - slope * y  # up to a constant per row
            logq = torch.log(got[i][inside])
            torch.testing.assert_close(logq - logq.mean(), want - want.mean(), rtol=0, atol=2e-3)
            p = plain[i][inside] / plain[i][inside].sum()
            shift = logq - torch.log(p)
            cov = (p * (y - (p * y).sum()) * (shift - (p * shift).sum())).sum()
            assert abs(float(cov)) < 1e-3
    tilted_rows = (beta > 0) & (plausible.sum(-1) > 2)
    moved = (got - plain).abs().amax(-1)
    assert (moved[tilted_rows] > 1e-4).all()  # what is left of the tilt still moves the set


@pytest.mark.parametrize("gain", [1.5, 3.0])
def test_cap_gain_bounds_every_token_and_keeps_the_others_odds(gain):
    """``cap_gain`` against the closed form above, on rows with a few to every token inside."""
    g = torch.Generator().manual_seed(3)
    y0 = torch.randn(8, 12, generator=g, dtype=torch.float64) * 2
    for i, inside in enumerate([1, 2, 5, 12, 12, 7, 3, 12]):
        y0[i, inside:] = float("-inf")
    y = y0 + torch.randn(8, 12, generator=g, dtype=torch.float64) * 3
    y[3] = y0[3] + 0.01 * torch.randn(12, generator=g, dtype=torch.float64)  # a row no token of which gains that much
    out = cap_gain(y0.float(), y.float(), torch.tensor(gain).log().item())
    p0 = torch.softmax(y0, -1)
    got = torch.softmax(out.double(), -1)
    capped = 0
    for i in range(8):
        inside = torch.isfinite(y0[i])
        want = capped64(p0[i][inside], (y - y0)[i][inside], gain)
        torch.testing.assert_close(got[i][inside], want, rtol=1e-4, atol=1e-7)
        assert (got[i][inside] <= gain * p0[i][inside] * (1 + 1e-5)).all()
        capped += bool((torch.softmax(y[i][inside], -1) > gain * p0[i][inside]).any())
    assert capped >= 3  # the case has rows the bound acts on
    torch.testing.assert_close(got[3], torch.softmax(y[3], -1), rtol=1e-5, atol=1e-7)  # and one it leaves alone


@pytest.mark.parametrize("gain", [1.5, 5.0])
def test_cap_gain_with_huge_tilts_and_ties(gain):
    """Tilts of tens of nats (where exp of a tilt overflows a float32 sum) and tokens tied in
    their tilt, against the float64 oracle."""
    g = torch.Generator().manual_seed(5)
    y0 = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    y = y0 + torch.randn(6, 10, generator=g, dtype=torch.float64) * 40
    y[1] = y0[1] + torch.tensor([5.0, 5.0, 5.0, 1.0, 0.0, 0.0, -3.0, 2.0, 5.0, 0.0], dtype=torch.float64)
    y0[2, 3:] = y[2, 3:] = float("-inf")
    out = cap_gain(y0.float(), y.float(), math.log(gain))
    p0, got = torch.softmax(y0, -1), torch.softmax(out.double(), -1)
    for i in range(6):
        inside = torch.isfinite(y0[i])
        torch.testing.assert_close(got[i][inside], capped64(p0[i][inside], (y - y0)[i][inside], gain), rtol=1e-4, atol=1e-6)
        assert (got[i][inside] <= gain * p0[i][inside] * (1 + 1e-5)).all()


def test_plausible_with_max_gain_bounds_the_plain_probabilities(case):
    """The plausible form with ``max_gain``: inside the plausible set no token's probability
    exceeds ``max_gain`` times plain sampling's, the set's total and the rest are plain
    sampling's, and on the rows the bound does not touch it is the definition."""
    h, h_hat, beta, head, x, calls = setup(case, "plain")
    temps, floor, k, plausible, t, plain = rule_case(x, h, h_hat, head, beta * 6, "residual")
    want, _ = plausible_reference(x, h, h_hat, head, beta * 6, "residual", temps, floor, k)
    for moments, given in calls:
        out = tilt_plausible(x.clone(), h, h_hat, head, beta * 6, "residual", temps, floor, moments, given, k=k, max_gain=2.0)
        got = torch.softmax(out.double() / t, -1)
        assert (got <= 2.0 * plain * (1 + 1e-4) + 1e-9).all()
        torch.testing.assert_close((got * plausible).sum(-1), (plain * plausible).sum(-1), rtol=1e-5, atol=1e-6)
        assert torch.equal(out[~plausible], x[~plausible])
        free = (want <= 2.0 * plain * (1 + 1e-6)).all(-1)  # rows the bound does not act on
        assert free.any() and (~free).any()
        torch.testing.assert_close(got[free], want[free], rtol=1e-4, atol=1e-6)


def test_center_on_group_removes_the_error_a_group_shares():
    """``center_on_group`` in float64: each group's new errors h - h_hat are its old ones less
    their mean over the group's finite rows; a group with one finite row, and a row that is not
    finite, keep their predictions."""
    g = torch.Generator().manual_seed(4)
    h, h_hat = torch.randn(7, D, generator=g), torch.randn(7, D, generator=g)
    row_group = torch.tensor([0, 1, 0, 2, 0, 1, 1])
    h_hat[5, 2] = float("nan")  # group 1 keeps two finite rows
    h_hat[3] += 5.0  # group 2 has one row
    out = center_on_group(h, h_hat, row_group, 3)
    err = h.double() - h_hat.double()
    for rows in ([0, 2, 4], [1, 6]):  # groups 0 and 1
        mean = err[rows].mean(0)
        torch.testing.assert_close((h.double() - out.double())[rows], err[rows] - mean, rtol=0, atol=1e-5)
    assert torch.equal(out[3], h_hat[3])
    assert torch.isnan(out[5, 2])
