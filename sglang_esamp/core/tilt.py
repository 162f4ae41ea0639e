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

- ``tilt_dense``: every token; one (N, D) x (D, V) head product for ``d``.
- ``tilt_candidates``: only the ``keep`` tokens; gathers those head rows (N x K x D). Its
  residual fit still covers the whole vocabulary: through ``VocabMoments`` on a linear head
  (D^2 per row), through the dense ``d`` on a softcapped one.

A row with beta = 0 keeps its logits bit for bit (within ``keep`` in the candidate form). A
row whose prediction is not finite is treated as beta = 0, so a diverged distiller never
puts NaN into sampling.

Shapes: N rows, V vocabulary, D hidden, K kept tokens per row (the batch's largest count).
"""

from __future__ import annotations

import torch

from .head import Head, VocabMoments

MODES = ("paper", "residual")


def safe_beta(beta: torch.Tensor, h_hat: torch.Tensor) -> torch.Tensor:
    """(N,) beta, zeroed where the prediction is not finite."""
    return torch.where(torch.isfinite(h_hat).all(-1), beta, torch.zeros_like(beta))


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


def _add(x: torch.Tensor, t: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """x + beta t on rows with beta > 0; the other rows unchanged. Masked (-inf) entries stay."""
    b = beta.to(torch.float32).unsqueeze(-1)  # (N, 1)
    return torch.where(b > 0, (x.float() + b * torch.nan_to_num(t)).to(x.dtype), x)


def tilt_dense(x: torch.Tensor, lm: torch.Tensor, h_hat: torch.Tensor, head: Head, beta: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, V) processed logits ``x``, (N, V) the model's logits ``lm``, (N, D) predictions,
    (N,) beta -> (N, V) tilted logits."""
    beta = safe_beta(beta, h_hat)
    d = head.logits(torch.nan_to_num(h_hat))  # (N, V)
    return _add(x, direction(lm.float(), d, mode), beta)


def tilt_candidates(
    x: torch.Tensor, lm: torch.Tensor, h: torch.Tensor, h_hat: torch.Tensor, head: Head, beta: torch.Tensor,
    keep: torch.Tensor, mode: str, moments: VocabMoments | None = None,
) -> torch.Tensor:
    """The tilt on the (N, V) ``keep`` tokens of ``x``; the rest go to -inf. ``h``: (N, D) the
    states the model's logits came from (the residual fit on a linear head reads them).

    K, the largest kept count in the batch, is read on the host: the one device sync of
    this form, which the dense form does not have."""
    beta = safe_beta(beta, h_hat)
    h_hat = torch.nan_to_num(h_hat)
    k = max(int(keep.sum(-1).max()), 1)
    idx = torch.topk(x.masked_fill(~keep, float("-inf")), k, dim=-1).indices  # (N, K)
    valid = keep.gather(1, idx)  # (N, K): rows with fewer than K kept tokens pad with unkept ones
    l_k = lm.float().gather(1, idx)
    if mode == "residual" and not (head.linear and moments is not None):  # a softcapped head: the fit reads every d
        d = head.logits(h_hat)  # (N, V)
        fit, d_k = affine_fit(lm.float(), d), d.gather(1, idx)
    else:
        fit = moments.fit(h, h_hat) if mode == "residual" else None
        d_k = head.logits(h_hat, idx)  # (N, K)
    tilted_k = _add(x.gather(1, idx), direction(l_k, d_k, mode, fit), beta)
    return torch.full_like(x, float("-inf")).scatter_(1, idx, tilted_k.masked_fill(~valid, float("-inf")))
