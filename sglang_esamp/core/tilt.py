"""The exploration tilt: logit_new = (1 + beta) * logit - beta * logit_dist.

``logit`` is the model's logit (LM head on the deep state h), ``logit_dist`` the LM head on
the distiller's prediction h_hat. Three exact forms of the same formula:

- ``mix_hidden`` / ``mix_residual``: a state that feeds ONE LM-head matmul in place of h
  (the head is linear without bias). For a caller that acts before the LM head runs.
- ``tilt_dense``: tilts a row's whole vocabulary from logits already computed (one extra
  head matmul on h_hat).
- ``tilt_candidates``: tilts only the tokens in ``keep`` (the row's top-k/top-p/min-p set,
  or a guard's plausible set); it gathers just those rows of the head. Tokens outside
  ``keep`` leave the distribution (-inf).

Semantics:

- The tilt acts on raw logits, before temperature. Sampling at temperature T then draws
  from (pi_ref^(1+beta) / q_dist^beta)^(1/T): the distiller's logit is divided by T like
  the model's. At T = 1 this is the paper's pi_new; greedy decoding takes its argmax.
- A row with beta = 0 is returned bit for bit. A row whose prediction is not finite is
  treated as beta = 0, so a diverged distiller never puts NaN into sampling.
- ``keep`` is the guard's interface: any (N, V) mask of allowed tokens. Passing it changes
  no other argument.
- ``cap_stop_mass`` is the stop guard in probability: lowering the other tokens' logits
  raises a stop token's share even when its own logit is capped, so it lowers the stop
  ids' logits together until their total probability at the row's temperature is no
  higher than before the tilt.

Two modes:

- ``paper``: the formula above.
- ``residual``: first remove from the distiller's logits their affine fit on the model's
  own logits over the row's allowed tokens, d = a * l + b + r, and tilt by the residual
  only: l - beta * r. The paper's tilt equals (1 + beta (1 - a)) l - beta r + const: when
  the distiller's logits are a flattened copy of the model's (a < 1, as a young distiller's
  are), part of its effect is plain sharpening, i.e. a lower temperature. The residual mode
  keeps only the part that is specific to what the distiller has not learned.
  Over the full vocabulary the fit needs no logits: cov(l, d) = h^T C h_hat with C the
  head's centred Gram matrix (``head_gram``), so ``mix_residual`` builds the tilted state
  in D dimensions; its logits differ from the dense form's by a per-row constant, which it
  returns for callers that compare tilted and untilted logits (the stop cap).

Shapes: N rows, V vocabulary, D hidden.
"""

from __future__ import annotations

import torch


def _safe_beta(beta: torch.Tensor, h_hat: torch.Tensor) -> torch.Tensor:
    """(N,) beta, zeroed where the prediction is not finite."""
    return torch.where(torch.isfinite(h_hat).all(-1), beta, torch.zeros_like(beta))


def mix_hidden(h: torch.Tensor, h_hat: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """(N, D) state whose LM-head logits are the tilted logits."""
    beta = _safe_beta(beta, h_hat).to(h.dtype).unsqueeze(-1)  # (N, 1)
    mixed = h + beta * (h - torch.nan_to_num(h_hat))
    return torch.where(beta > 0, mixed, h)


def head_gram(head_weight: torch.Tensor) -> torch.Tensor:
    """(D, D) centred Gram matrix of the head's (V, D) rows: sum_v (w_v - w_mean)(w_v - w_mean)^T."""
    w = head_weight.float()
    w = w - w.mean(0)  # centred first: no cancellation in float32
    return w.t() @ w


def mix_residual(
    h: torch.Tensor, h_hat: torch.Tensor, beta: torch.Tensor, gram: torch.Tensor, head_mean: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual tilt over the full vocabulary, as a state: ((N, D) mixed, (N,) shift).

    head(mixed) = l - beta * r + shift, with r the residual of d on its affine fit a * l + b
    over every token: mixed = (1 + beta a) h - beta h_hat, shift = -beta b. ``gram``: (D, D)
    from ``head_gram``; ``head_mean``: (D,) the mean head row."""
    beta = _safe_beta(beta, h_hat).float().unsqueeze(-1)  # (N, 1)
    hf, hh = h.float(), torch.nan_to_num(h_hat).float()
    ch = hf @ gram  # (N, D)
    a = (ch * hh).sum(-1, keepdim=True) / (ch * hf).sum(-1, keepdim=True).clamp_min(1e-6)  # (N, 1)
    b = hh @ head_mean - a.squeeze(-1) * (hf @ head_mean)  # (N,)
    mixed = torch.where(beta > 0, (1 + beta * a) * hf - beta * hh, hf)
    return mixed.to(h.dtype), -beta.squeeze(-1) * b


MODES = ("paper", "residual")


def residual(logits: torch.Tensor, logits_dist: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, K) distiller logits minus their per-row least-squares fit a * logits + b over the
    ``valid`` entries; 0 elsewhere."""
    w = valid.to(torch.float32)
    lg, d = torch.where(valid, logits.float(), 0.0), torch.where(valid, logits_dist.float(), 0.0)
    count = w.sum(-1, keepdim=True).clamp_min(1.0)  # (N, 1)
    lc = (lg - lg.sum(-1, keepdim=True) / count) * w
    dc = (d - d.sum(-1, keepdim=True) / count) * w
    a = (lc * dc).sum(-1, keepdim=True) / (lc * lc).sum(-1, keepdim=True).clamp_min(1e-6)  # (N, 1)
    return (dc - a * lc).to(logits.dtype)


def _tilt(logits: torch.Tensor, logits_dist: torch.Tensor, b: torch.Tensor, valid, mode: str) -> torch.Tensor:
    """``valid``: an (N, K) mask, or a callable that builds it (only the residual mode reads it)."""
    if mode == "residual":
        return logits - b * residual(logits, logits_dist, valid() if callable(valid) else valid)
    if mode != "paper":
        raise ValueError(f"unknown tilt mode {mode!r}; expected one of {', '.join(MODES)}")
    return torch.lerp(logits_dist, logits, 1 + b)  # (1 + b) l - b d in one pass


def tilt_logits(
    logits: torch.Tensor, logits_dist: torch.Tensor, beta: torch.Tensor, keep: torch.Tensor | None = None, mode: str = "paper"
) -> torch.Tensor:
    """(N, V) logits, (N, V) distiller logits, (N,) beta -> (N, V) tilted logits."""
    b = beta.to(logits.dtype).unsqueeze(-1)  # (N, 1)
    tilted = _tilt(logits, logits_dist, b, lambda: torch.isfinite(logits) if keep is None else keep & torch.isfinite(logits), mode)
    if keep is not None:
        tilted = tilted.masked_fill(~keep, float("-inf"))
    return torch.where(b > 0, tilted, logits)


def tilt_dense(
    logits: torch.Tensor, h_hat: torch.Tensor, head_weight: torch.Tensor, beta: torch.Tensor,
    keep: torch.Tensor | None = None, mode: str = "paper",
) -> torch.Tensor:
    """Full-vocabulary tilt. head_weight: (V, D). Costs one (N, D) x (D, V) matmul."""
    beta = _safe_beta(beta, h_hat)
    logits_dist = torch.nan_to_num(h_hat).to(head_weight.dtype) @ head_weight.t()  # (N, V)
    return tilt_logits(logits, logits_dist.to(logits.dtype), beta, keep, mode)


def tilt_candidates(
    logits: torch.Tensor, h_hat: torch.Tensor, head_weight: torch.Tensor, beta: torch.Tensor, keep: torch.Tensor, mode: str = "paper"
) -> torch.Tensor:
    """Tilt only the kept tokens; the rest go to -inf. Costs N x K x D for K kept tokens.

    K, the largest kept count in the batch, is read on the host: the one device sync of
    this form, which the dense form does not have.
    """
    beta = _safe_beta(beta, h_hat)
    k = max(int(keep.sum(-1).max()), 1)
    idx = torch.topk(logits.masked_fill(~keep, float("-inf")), k, dim=-1).indices  # (N, K)
    cand = logits.gather(1, idx)  # (N, K)
    valid = keep.gather(1, idx) & torch.isfinite(cand)  # (N, K): rows with fewer than K kept tokens pad with unkept ones
    rows = head_weight[idx]  # (N, K, D)
    cand_dist = torch.einsum("nd,nkd->nk", torch.nan_to_num(h_hat).to(rows.dtype), rows).to(logits.dtype)
    b = beta.to(logits.dtype).unsqueeze(-1)
    cand_new = torch.where(valid, _tilt(cand, cand_dist, b, valid, mode), torch.full_like(cand, float("-inf")))
    tilted = torch.full_like(logits, float("-inf")).scatter_(1, idx, cand_new)
    return torch.where(b > 0, tilted, logits)


def cap_stop_mass(
    tilted: torch.Tensor, before: torch.Tensor, stop_ids: torch.Tensor, temperature: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, V) tilted logits whose stop ids hold at most the total probability they held in
    ``before``, both at the rows' (N,) ``temperature`` and, if given, within the (N, V)
    ``keep`` set that the tilted row was restricted to. The stop logits of a row over its
    budget drop by one common amount, so the row's other tokens keep their ratios; a row
    within budget is returned as it is. Logit offsets of the two inputs need not agree."""
    t = temperature.float().clamp_min(1e-6).view(-1, 1)  # (N, 1)
    ref = before.float() / t
    if keep is not None:
        ref = ref.masked_fill(~keep, float("-inf"))
    scaled = tilted.float() / t
    ref_stop = torch.logsumexp(ref[:, stop_ids], -1)  # (N,)
    budget = ref_stop - torch.logsumexp(ref.index_fill(1, stop_ids, float("-inf")), -1)  # log-odds of stopping before
    odds = torch.logsumexp(scaled[:, stop_ids], -1) - torch.logsumexp(scaled.index_fill(1, stop_ids, float("-inf")), -1)
    drop = torch.nan_to_num((odds - budget).clamp_min(0.0), nan=0.0, posinf=0.0) * t.squeeze(-1)  # (N,)
    out = tilted.clone()
    out[:, stop_ids] = tilted[:, stop_ids] - drop.to(tilted.dtype).unsqueeze(-1)
    return out
