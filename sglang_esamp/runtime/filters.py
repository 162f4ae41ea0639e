"""The keep-set of SGLang's top-k / top-p / min-p filters, as a mask, for the tilt and the
stratified sampler.

The method tilts only the candidates that a row's filters keep. SGLang applies those
filters inside its sampler, on probabilities after temperature. ``filter_mask`` computes the
same set from the same inputs, so the tilt can act on it first; the sampler then runs with
neutral filters on those rows (the excluded tokens are already at -inf).

Shapes: n rows, V vocabulary.
"""

from __future__ import annotations

import torch


def min_p_mask(logits: torch.Tensor, temperature: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """The min-p rule alone, without softmax or sort: p_i >= min_p * p_max at temperature T
    is logit_i >= logit_max + T * log(min_p)."""
    floor = logits.max(-1, keepdim=True).values + temperature.unsqueeze(-1) * torch.log(min_p.clamp_min(1e-30)).unsqueeze(-1)
    return logits >= floor  # (n, V)


def filter_mask(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
    min_p_only: bool = False,
) -> torch.Tensor:
    """(n, V) logits, (n,) temperature, top_k, top_p, min_p -> (n, V) bool keep mask.
    ``min_p_only``: the caller knows no row has top-k or top-p, so the sort is skipped."""
    if min_p_only:
        return min_p_mask(logits, temperature, min_p)
    return keep_mask(torch.softmax(logits / temperature.unsqueeze(-1), dim=-1), top_k, top_p, min_p)


def keep_mask(probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """(n, V) probabilities after temperature, (n,) top_k, top_p, min_p -> (n, V) bool keep
    mask, by SGLang's rules: rank below top-k, the mass before the token at most top-p, and
    at least min-p times the top token's probability; the top token always stays."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    rank = torch.arange(probs.shape[-1], device=probs.device).unsqueeze(0)  # (1, V)
    keep_sorted = rank < top_k.unsqueeze(-1)
    keep_sorted &= (sorted_p.cumsum(-1) - sorted_p) <= top_p.unsqueeze(-1)  # as SGLang: the token crossing top_p stays
    keep_sorted &= sorted_p >= min_p.unsqueeze(-1) * sorted_p[:, :1]
    keep_sorted[:, 0] = True
    return torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
