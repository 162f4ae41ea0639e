"""Fit one base distiller on (shallow, deep) state pairs: the ``calibrated`` warm start.

A fresh random distiller predicts worse than zero for its first ~50 steps on SmolLM2, and
its logits pump end-of-sequence. A base fitted offline on text the model itself wrote
already knows the model's generic shallow-to-deep map, so from the first decode step the
tilt pushes only against what is specific to the group: each new group starts from a copy
of the base (fresh Adam state) and adapts online as before.

Pure torch: the caller supplies the pairs (``sglang_esamp.calibrate`` collects them).

Usage::

    arch = build_architecture("mlp", 576, 384, 64)
    fit = fit_base(arch, src, tgt, out_gain, steps=600, seed=0)   # src, tgt: (N, D)
    fit.params                                                     # name -> (1, ...)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .distiller import LowRankDistiller, MLPDistiller, Params, random_init


@dataclass
class BaseFit:
    params: Params  # name -> (1, *shape), float32, CPU
    rel_err_init: float  # held-out sum ||h - f||^2 / sum ||h||^2 of the random init
    rel_err: float  # the same after fitting
    train_rows: int
    heldout_rows: int


def rel_err(arch, params: Params, src: torch.Tensor, tgt: torch.Tensor, chunk: int = 4096) -> float:
    """sum ||tgt - f(src)||^2 / sum ||tgt||^2 over all rows. src, tgt: (N, D)."""
    num = den = 0.0
    with torch.no_grad():
        for i in range(0, src.shape[0], chunk):
            x, y = src[i : i + chunk].unsqueeze(0), tgt[i : i + chunk].unsqueeze(0)  # (1, n, D)
            num += float((arch.forward(params, x) - y).pow(2).sum())
            den += float(y.pow(2).sum())
    return num / max(den, 1e-12)


def fit_base(
    arch: MLPDistiller | LowRankDistiller,
    src: torch.Tensor,
    tgt: torch.Tensor,
    out_gain: torch.Tensor | None,
    *,
    steps: int = 600,
    batch: int = 512,
    lr: float = 2e-3,
    heldout: float = 0.1,
    seed: int = 0,
) -> BaseFit:
    """Adam with cosine decay on the mean squared error, minibatches of rows. The last
    ``heldout`` share of rows (the caller orders them by sequence) only measures."""
    if src.shape != tgt.shape or src.dim() != 2:
        raise ValueError(f"src and tgt must both be (N, D); got {tuple(src.shape)} and {tuple(tgt.shape)}")
    src, tgt = src.float(), tgt.float()
    n_held = max(1, int(src.shape[0] * heldout))
    n_train = src.shape[0] - n_held
    if n_train < 1:
        raise ValueError(f"need at least 2 calibration rows; got {src.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    params = {k: v.requires_grad_() for k, v in random_init(arch.shapes(), 1, gen, out_gain).items()}
    init_err = rel_err(arch, params, src[n_train:], tgt[n_train:])
    opt = torch.optim.Adam(params.values(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, n_train, (min(batch, n_train),), generator=gen)
        loss = (arch.forward(params, src[idx].unsqueeze(0)) - tgt[idx].unsqueeze(0)).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    params = {k: v.detach() for k, v in params.items()}
    return BaseFit(params, init_err, rel_err(arch, params, src[n_train:], tgt[n_train:]), n_train, n_held)
