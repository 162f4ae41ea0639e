"""The plausible form's bound on any token's gain (``--esamp-tilt-max-gain``) in closed form,
float64, for the unit tests and the server probe alike (independent of core/tilt.py's
bisection)."""

import torch


def capped64(p: torch.Tensor, u: torch.Tensor, gain: float) -> torch.Tensor:
    """The distribution p exp(u) / Z with no token above ``gain`` times its p: over the tokens
    sorted by u, the m raised most sit at the bound and the rest keep p exp(u) / Z. Then
    Z = A + gain P Z (A: the rest's sum of p exp(u); P: the m tokens' total p), so
    Z = A / (1 - gain P); the answer is the first m consistent with it (its tokens at or above
    the bound, the others below). p: (K,) summing to 1; u: (K,) the tilt, up to a constant."""
    u = u - u.max()
    order = torch.argsort(u, descending=True)
    for m in range(len(u)):
        top, rest = order[:m], order[m:]
        room = 1 - gain * p[top].sum()
        if room <= 0:
            continue
        z = (p[rest] * u[rest].exp()).sum() / room
        ratio = u.exp() / z
        if (ratio[top] >= gain * (1 - 1e-12)).all() and (ratio[rest] <= gain * (1 + 1e-12)).all():
            return torch.where(torch.isin(torch.arange(len(u)), top), gain * p, p * ratio)
    raise AssertionError("no consistent set of tokens at the bound")
