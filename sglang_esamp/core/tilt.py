"""The exploration tilt, defined once, and its two exact forms.

**Definition.** For one row, let ``l`` be the model's own final logits: after everything the
model itself does (LM-head bias, ``logit_scale``, final-logit softcapping) and before
SGLang's request processing (penalties, logit bias, grammar masks). Let ``d`` be the
distiller's logits: its prediction ``h_hat`` through the same head and the same model-side
processing (``core.head.Head``). The tilt's direction is

- ``paper``:    t = l - d;
- ``residual``: t = -(d - (a l + b)), with (a, b) the least-squares fit of d on l over the
  whole vocabulary: only the part of the distiller's logits that the model's own logits do
  not explain. (The paper's t equals (1 - a) l - (d - a l - b) + const: when the distiller's
  logits are a flattened copy of the model's, a < 1 and part of the paper's tilt is plain
  sharpening, i.e. a lower temperature.)

SGLang samples from ``x + beta t``, where ``x`` are the processed logits: SGLang's penalties,
logit bias and grammar mask act exactly as they do without ESamp. Temperature and the
top-k / top-p / min-p filters follow as always; for a filtered row the candidates are the
tokens its filters keep from the untilted ``x`` (``keep``), and the rest leave the
distribution. ``x + beta t`` with t = l - d is, at T = 1 and without request processing,
the paper's pi_ref^(1+beta) / q_dist^beta.

**Forms.**

- ``tilt_dense``: every token.
- ``tilt_candidates``: only the ``keep`` tokens; gathers those head rows (N x K x D, in blocks
  of at most ``head.GATHER_BYTES``).
- ``tilt_plausible``: only the row's plausible tokens (its likeliest ones above a min-p
  floor), whose total probability it keeps; every other token keeps its untilted logit
  (``--esamp-tail-floor``). Gathers K head rows, like the candidate form. ``plausible_tilt``
  gives the K changed values without writing them, for a caller that writes them itself.

On a linear head (bias and logit scale allowed) t needs neither l nor d in full: it is the
head's linear part on one state, s W (a h - h_hat), plus s (a - 1) c + b, with the
residual's full-vocabulary fit (a, b) from ``VocabMoments`` in D^2 per row: one (N, D) x
(D, V) product for the dense form, with beta folded into the state before it. A softcapped
head is not affine in the state; there the forms take the model's own ``lm`` and compute
``d``, and the residual's candidate form computes ``d`` over every token for the fit.

**Group centering** (``center_on_group``, ``--esamp-tilt-center group``): before any form,
each prediction may be shifted by its group's mean error at this step, so that the tilt sees
only how a row's error differs from its siblings': an error that every sample of a group
shares (the distiller's bias) pushes them all the same way, which makes them alike.

A row with beta = 0 keeps its logits (within ``keep`` in the candidate form): x + 0. A
row whose prediction is not finite is treated as beta = 0, so a diverged distiller never
puts NaN into sampling.

Shapes: N rows, V vocabulary, D hidden, K kept tokens per row (the batch's largest count).
"""

from __future__ import annotations

import math

import torch

from .head import Head, VocabMoments

MODES = ("paper", "residual")
PLAUSIBLE_K = 64  # tokens of a row the plausible form may tilt: its likeliest
ENTROPY_ITERS = 24  # bisection steps of ``entropy_scale``: log s to within 8 / 2**24
ENTROPY_RULES = ("free", "keep", "local")  # what the plausible form does to its set's sharpness
CENTER_RULES = ("none", "group")  # what the tilt's prediction is shifted by before any form


def safe_beta(beta: torch.Tensor, h_hat: torch.Tensor) -> torch.Tensor:
    """(N,) beta, zeroed where the prediction is not finite."""
    return torch.where(torch.isfinite(h_hat).all(-1), beta, torch.zeros_like(beta))


def center_on_group(h: torch.Tensor, h_hat: torch.Tensor, row_group: torch.Tensor, groups: int) -> torch.Tensor:
    """(M, D) predictions ``h_hat`` of the (M, D) states ``h``, each shifted by the mean error
    h - h_hat of its group's rows (``row_group``, (M,) into ``groups``): row i's new error is
    its own less that mean. Rows with a non-finite state or prediction are left out of the
    means (a non-finite prediction stays so, and ``safe_beta`` zeroes its row); a group with
    fewer than two finite rows keeps its predictions, so a lone sample is tilted as without
    centering.
    A new tensor in h_hat's dtype; no host sync."""
    err = h.float() - h_hat.float()  # (M, D)
    ok = torch.isfinite(err.sum(-1))  # (M,): a row with any non-finite entry sums to one
    err.masked_fill_(~ok.unsqueeze(-1), 0.0)
    total = err.new_zeros(groups, err.shape[-1]).index_add_(0, row_group, err)  # (g, D)
    count = err.new_zeros(groups).index_add_(0, row_group, ok.float())  # (g,)
    shift = total * ((count >= 2) / count.clamp_min(1.0)).unsqueeze(-1)  # (g, D): the mean error, 0 for a lone row
    return (h_hat.float() + shift[row_group]).to(h_hat.dtype)


def affine_fit(lm: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) a and b of the least-squares fit d ~ a lm + b over each row's V tokens."""
    lc = lm - lm.mean(-1, keepdim=True)
    a = (lc * (d - d.mean(-1, keepdim=True))).sum(-1) / (lc * lc).sum(-1).clamp_min(1e-6)
    return a, d.mean(-1) - a * lm.mean(-1)


def direction(lm: torch.Tensor, d: torch.Tensor, mode: str, fit: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """t from the model's logits ``lm`` and the distiller's ``d`` (both (N, V), or (N, K) for
    candidates, with the whole vocabulary's ``fit`` (a, b) given)."""
    if mode == "paper":
        return lm - d
    if mode != "residual":
        raise ValueError(f"unknown tilt mode {mode!r}; expected one of {', '.join(MODES)}")
    a, b = affine_fit(lm, d) if fit is None else fit
    return a.unsqueeze(-1) * lm + b.unsqueeze(-1) - d


def _linear_tilt(head: Head, h: torch.Tensor, h_hat: torch.Tensor, beta: torch.Tensor, mode: str, moments: VocabMoments | None,
                 idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """beta t on a linear head, with one head product: with l = s (W h + c) and d = s (W h_hat + c),
    a l + b - d = s W (a h - h_hat) + s (a - 1) c + b (a = 1, b = 0 in the paper's mode). beta is
    folded into the state before the product. Returns the part that varies by token, (N, V)
    in the head's dtype (or (N, K) float32 at ``idx``), and the (N, 1) per-row constant (None
    in the paper's mode)."""
    beta = beta.float().unsqueeze(-1)  # (N, 1)
    if mode == "paper":
        return head.linear_part(beta * (h.float() - h_hat.float()), idx, native=idx is None), None
    a, b = moments.fit(h, h_hat)  # (N,) each, over the whole vocabulary
    varying = head.linear_part(beta * (a.unsqueeze(-1) * h.float() - h_hat.float()), idx, native=idx is None)
    if head.bias is not None:
        bias = head.bias.float() if idx is None else head.bias.float()[idx]
        varying = varying + (head.scale or 1.0) * beta * (a - 1).unsqueeze(-1) * bias
    return varying, beta * b.unsqueeze(-1)


def _one_product(head: Head, mode: str, moments: VocabMoments | None) -> bool:
    """The tilt needs no full logits: a linear head, with the residual's moments at hand."""
    return head.linear and (mode == "paper" or moments is not None)


def tilt_dense(
    x: torch.Tensor, h: torch.Tensor, h_hat: torch.Tensor, head: Head, beta: torch.Tensor, mode: str,
    moments: VocabMoments | None = None, lm: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, V) processed logits ``x``, (N, D) the states the model's logits came from and the
    predictions, (N,) beta -> (N, V) tilted logits, a new tensor (``x`` is left as it is).
    On a linear head it costs one (N, D) x (D, V) product, added to x as it comes;
    otherwise it needs ``lm`` (N, V), the model's own logits, and computes d.
    A row with beta = 0 gets x + 0 = x; masked (-inf) entries of x stay masked."""
    beta = safe_beta(beta, h_hat)
    h_hat = torch.nan_to_num(h_hat, nan=0.0, posinf=0.0, neginf=0.0)  # its row has beta 0 now
    if _one_product(head, mode, moments):
        varying, constant = _linear_tilt(head, h, h_hat, beta, mode, moments)
        out = torch.add(x, varying)  # (N, V) float32, the product in the head's dtype added as it comes
        return out if constant is None else out.add_(constant)
    return torch.add(x, direction(lm.float(), head.logits(h_hat), mode).mul_(beta.float().unsqueeze(-1)))


def plausible_tilt(
    x: torch.Tensor, h: torch.Tensor, h_hat: torch.Tensor, head: Head, beta: torch.Tensor, mode: str, temps: torch.Tensor,
    floor: float, moments: VocabMoments | None = None, lm: torch.Tensor | None = None, k: int = PLAUSIBLE_K,
    entropy: str = "free", max_gain: float = 0.0, held: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tilt within each row's plausible set, without touching (N, V) ``x``: the tokens among
    its ``k`` likeliest whose probability at the row's temperature (``temps``, (N,)) is at
    least ``floor`` times the top token's. Their total probability stays what it was
    untilted (one shift of their tilted logits), and every other token keeps exactly its
    untilted logit, so its probability is plain sampling's, token by token. ``entropy`` (one
    of ``ENTROPY_RULES``) says what becomes of the set's sharpness: ``free``, the tilt as it
    comes; ``keep``, the tilted set rescaled to its untilted entropy (``entropy_scale``), so
    the row's whole distribution keeps plain sampling's entropy; ``local``, the tilt less its
    component along the set's own logits (``detrend``), so it neither sharpens nor flattens
    the set to first order. ``max_gain`` > 1 bounds what the tilt may do to any one token: its
    probability at most ``max_gain`` times its untilted one (``cap_gain``; 0: no bound).
    ``held`` (S,) token ids are left out of the set: they keep their untilted logits even
    where they are plausible (the stop ids under ``--esamp-stop-cap hold``: as the set's total
    and every other logit are kept, the row's normaliser is too, so each of them keeps its
    untilted probability exactly, with no pass over the vocabulary).
    Arguments as ``tilt_dense``; on a linear head it gathers the k
    head rows (N x k x D), no (N, V) product.

    Returns (N, K) each: the token ids, their untilted logits (float32) and their tilted ones
    (x's dtype; the untilted value outside the plausible set). The row's total is kept, so
    writing the tilted values at the ids is the whole tilt (``tilt_plausible``)."""
    beta = safe_beta(beta, h_hat)
    h_hat = torch.nan_to_num(h_hat, nan=0.0, posinf=0.0, neginf=0.0)  # its row has beta 0 now
    t = temps.float().clamp_min(1e-6).unsqueeze(-1)  # (N, 1)
    vals, idx = torch.topk(x, min(k, x.shape[-1]), dim=-1)  # (N, K), the row's top first
    vals = vals.float()
    plausible = vals >= vals[:, :1] + t * math.log(floor)  # (N, K); -inf entries never
    if held is not None and held.numel():
        plausible &= ~(idx.unsqueeze(-1) == held).any(-1)
    if entropy not in ENTROPY_RULES:
        raise ValueError(f"unknown entropy rule {entropy!r}; expected one of {', '.join(ENTROPY_RULES)}")
    push = _tilt_at(x, h, h_hat, head, beta, mode, moments, lm, idx)[0]  # (N, K); a per-row constant changes nothing here
    if entropy == "local":
        push = detrend(push, vals / t, plausible)
    tilted = vals + push
    inf = float("-inf")  # a Python scalar: no tensor made on the host per step
    y0 = torch.where(plausible, vals / t, inf)  # (N, K) untilted, at the row's temperature; the rest -inf
    y = torch.where(plausible, tilted / t, inf)  # (N, K) tilted
    if entropy == "keep":
        y = y * entropy_scale(y0, y).unsqueeze(-1)
    if max_gain > 0:
        y = cap_gain(y0, y, math.log(max_gain))
    keep = torch.logsumexp(y0, -1) - torch.logsumexp(y, -1)  # (N,); NaN for an empty set, never used
    return idx, vals, torch.where(plausible, (y + keep.unsqueeze(-1)) * t, vals).to(x.dtype)


def tilt_plausible(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``plausible_tilt`` written into (N, V) ``x`` in place; arguments as there."""
    idx, _, tilted = plausible_tilt(x, *args, **kwargs)
    return x.scatter_(1, idx, tilted)


def detrend(push: torch.Tensor, y0: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(N, K) ``push`` less its least-squares fit on the (N, K) scaled logits ``y0`` over the
    ``inside`` tokens, each weighted by its untilted probability there: what is left has no
    component along the row's own logits, so adding it changes the set's temperature by
    nothing to first order. A row with fewer than two distinct logits inside keeps ``push``."""
    w = torch.softmax(torch.where(inside, y0, float("-inf")), -1)  # (N, K); 0 outside
    y = torch.where(inside, y0, 0.0)
    yc = y - (w * y).sum(-1, keepdim=True)  # (N, K)
    pc = push - (w * push).sum(-1, keepdim=True)
    var = (w * yc * yc).sum(-1, keepdim=True)  # (N, 1)
    slope = torch.where(var > 1e-12, (w * yc * pc).sum(-1, keepdim=True) / var.clamp_min(1e-12), 0.0)
    return push - slope * y


def cap_gain(y0: torch.Tensor, y: torch.Tensor, log_gain: float) -> torch.Tensor:
    """(N, K) ``y`` with each token's gain over (N, K) ``y0`` bounded (both -inf outside the
    same set): softmax of the result is at most exp(``log_gain``) times softmax(y0), token by
    token. With u = y - y0, p = softmax(y0) and g = ``log_gain``, the result is
    y0 + min(u, L + g), where L solves L = log sum_j p_j exp(min(u_j, L + g)), the log of the
    capped row's normaliser: a token's gain is then exp(min(u_j, L + g) - L).

    Closed form, no iteration: with the top m tokens by u held at the bound, the equation
    reads e^L = e^(L+g) P_m + A_m (P_m: their total p; A_m: the others' sum of p_j e^(u_j)),
    so L_m = log A_m - log(1 - e^g P_m) where e^g P_m < 1. Each L_m is at least L (holding a
    token at min(u, L + g) can only be raised by choosing either side for it), and the true
    set of held tokens, those with u above L + g, is such a top m; so L = min_m L_m. Tokens
    below the bound keep their relative odds; a row whose tilt raises no token by more than
    the bound is unchanged."""
    inside = torch.isfinite(y0)  # (N, K)
    inf = float("inf")
    logp = torch.log_softmax(y0, -1)  # -inf outside
    u, order = torch.where(inside, y - y0, -inf).sort(-1, descending=True)  # (N, K) the outside tokens last
    lp = logp.gather(1, order)
    p = lp.exp()
    held = torch.cumsum(p, -1) - p  # (N, K) P_m: the total p of the tokens before position m
    log_rest = torch.logcumsumexp((lp + u).flip(-1), -1).flip(-1)  # (N, K) log A_m: over positions m and after
    room = 1.0 - math.exp(log_gain) * held
    level = torch.where((room > 0) & torch.isfinite(log_rest), log_rest - torch.log(room.clamp_min(1e-30)), inf).amin(-1)  # (N,)
    return torch.where(inside, y0 + torch.minimum(y - y0, (level + log_gain).unsqueeze(-1)), y)


def _entropy(y: torch.Tensor) -> torch.Tensor:
    """(N,) entropy of softmax over the finite entries of (N, K) ``y``."""
    logp = torch.log_softmax(y, -1)
    return -torch.where(torch.isfinite(y), logp.exp() * logp, 0.0).sum(-1)


def entropy_scale(y0: torch.Tensor, y: torch.Tensor, iters: int = ENTROPY_ITERS) -> torch.Tensor:
    """(N,) the factor s > 0 for which softmax(s y) has the entropy of softmax(y0), both (N, K)
    with -inf outside the same set: the tilt then moves probability among the set's tokens
    without making the row sharper or flatter. The entropy of softmax(s y) falls as s grows,
    so a bisection on log s over [-4, 4] finds it, a fixed number of steps (no host sync);
    a row whose tilted set is uniform or holds one token gets whatever the bisection ends on,
    which changes nothing there."""
    target = _entropy(y0)  # (N,)
    lo = torch.full_like(target, -4.0)
    hi = torch.full_like(target, 4.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        flatter = _entropy(y * mid.exp().unsqueeze(-1)) > target  # s too small: sharpen more
        lo = torch.where(flatter, mid, lo)
        hi = torch.where(flatter, hi, mid)
    return ((lo + hi) / 2).exp()


def _tilt_at(x, h, h_hat, head: Head, beta, mode: str, moments, lm, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """beta t at token ids ``idx`` (N, K): the (N, K) float32 part that varies by token and, on
    a linear head in the residual mode, the (N, 1) per-row constant (else None)."""
    if _one_product(head, mode, moments):
        return _linear_tilt(head, h, h_hat, beta, mode, moments, idx)
    lm_k = lm.float().gather(1, idx)
    if mode == "paper":  # a softcapped head: l and d at the K tokens
        t = lm_k - head.logits(h_hat, idx)
    else:  # a softcapped head: the residual's fit reads every token's d
        d = head.logits(h_hat)
        t = direction(lm_k, d.gather(1, idx), mode, affine_fit(lm.float(), d))
    return t.mul_(beta.float().unsqueeze(-1)), None


def tilt_candidates(
    x: torch.Tensor, h: torch.Tensor, h_hat: torch.Tensor, head: Head, beta: torch.Tensor, keep: torch.Tensor, mode: str,
    moments: VocabMoments | None = None, lm: torch.Tensor | None = None, held: torch.Tensor | None = None,
    temps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The tilt on the (N, V) ``keep`` tokens of ``x``; the rest go to -inf. Arguments as
    ``tilt_dense``; on a linear head it gathers the K kept rows of the head (N x K x D).
    ``held`` (S,) token ids keep their untilted logits, and the other kept tokens move by one
    common amount that keeps their total probability at (N,) temperatures ``temps`` (the
    stop ids under ``--esamp-stop-cap hold``: each keeps its untilted probability within the
    kept set, computed from the K kept tokens alone).

    K, the largest kept count in the batch, is read on the host: the one device sync of
    this form, which the dense form does not have."""
    beta = safe_beta(beta, h_hat)
    h_hat = torch.nan_to_num(h_hat, nan=0.0, posinf=0.0, neginf=0.0)  # its row has beta 0 now
    k = max(int(keep.sum(-1).max()), 1)
    idx = torch.topk(x.masked_fill(~keep, float("-inf")), k, dim=-1).indices  # (N, K)
    valid = keep.gather(1, idx)  # (N, K): rows with fewer than K kept tokens pad with unkept ones
    varying, constant = _tilt_at(x, h, h_hat, head, beta, mode, moments, lm, idx)
    untilted_k = x.gather(1, idx).float()  # (N, K)
    tilted_k = untilted_k + varying
    if constant is not None:
        tilted_k.add_(constant)
    if held is not None and held.numel():
        fixed = (idx.unsqueeze(-1) == held).any(-1)  # (N, K)
        moving = valid & ~fixed
        t = temps.float().clamp_min(1e-6).unsqueeze(-1)  # (N, 1)
        inf = float("-inf")
        shift = t.squeeze(-1) * (torch.logsumexp(torch.where(moving, untilted_k / t, inf), -1)
                                 - torch.logsumexp(torch.where(moving, tilted_k / t, inf), -1))  # (N,); NaN: nothing moves
        tilted_k = torch.where(fixed, untilted_k, tilted_k + torch.nan_to_num(shift).unsqueeze(-1))
    tilted_k = tilted_k.to(x.dtype).masked_fill(~valid, float("-inf"))
    return torch.full_like(x, float("-inf")).scatter_(1, idx, tilted_k)
