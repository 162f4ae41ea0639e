"""WarmBase: the base distiller new groups start from, trained by the serving runtime itself.

A fresh random distiller predicts worse than zero for its first ~50 steps on SmolLM2, and
its logits pump end-of-sequence. A base that already knows the model's generic
shallow-to-deep map lets the tilt push, from a group's first step, only against what is
specific to that group (``--esamp-init calibrated``).

The base learns from the server's own decode rows, on the server's device and dtype, so no
second copy of the model is ever loaded:

- every decode step hands its (shallow, deep) rows to ``add``; at most ``ROWS_PER_STEP``
  of them (evenly spread) go into a ``RowReservoir``;
- once the reservoir holds ``MIN_ROWS`` rows (it is sized to hold them, whatever the
  hidden size), the base owes a first fit of ``FIRST_STEPS``
  Adam steps on minibatches of ``BATCH`` reservoir rows (learning rate ``LR`` with cosine
  decay: the recipe that fitted the base offline before);
- after that it owes one step at ``REFRESH_LR`` per ``REFRESH_ROWS`` new rows (at most
  ``MAX_OWED``), so it keeps following the traffic.

The caller decides when owed steps run (the runtime: in the scheduler's idle time) and
when the weights are handed to the bank (``snapshot``). Pure torch.

Usage::

    base = WarmBase(arch, hidden=576, device="cpu", dtype=torch.bfloat16, init=params)
    base.add(h1, h)          # every decode step; (rows, D) each
    while base.owed:
        base.step()
    bank.set_base(base.snapshot())
"""

from __future__ import annotations

import math

import torch

from .distiller import LowRankDistiller, MLPDistiller, Params
from .reservoir import RowReservoir

ROWS_PER_STEP = 64
MIN_ROWS = 2048
FIRST_STEPS = 600
BATCH = 512
LR = 2e-3
REFRESH_ROWS = 512
REFRESH_LR = 1e-4
MAX_OWED = 64  # refresh steps a busy server may owe at once
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


class WarmBase:
    def __init__(
        self,
        arch: MLPDistiller | LowRankDistiller,
        hidden: int,
        device: torch.device | str,
        dtype: torch.dtype,
        init: Params,
        steps: int = 0,
        rows: int = 0,
        seed: int = 0,
    ):
        self.arch = arch
        self.params = {k: v.detach().float().to(device).clone().requires_grad_() for k, v in init.items()}  # (1, ...)
        self.exp_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}  # Adam's moments, allocated up front
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self._adam_steps = 0  # since this Adam state began (a loaded base starts a fresh one)
        self.reservoir = RowReservoir.sized(hidden, device, dtype, least=MIN_ROWS)  # room for the first fit's rows
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.steps = steps  # steps over the base's life, a cached base's included
        self._rows_before = rows  # rows a cached base had drawn from
        self.owed = 0
        self.rel_err = torch.full((), math.nan, device=device)  # of the last step's minibatch, before it
        self._credit = 0  # new rows not yet paid for by a refresh step

    @property
    def nbytes(self) -> int:
        """Weights, Adam moments, the reservoir and the last error."""
        return 3 * sum(v.nbytes for v in self.params.values()) + self.reservoir.nbytes + self.rel_err.nbytes

    @staticmethod
    def bytes_for(params: int, hidden: int, dtype: torch.dtype) -> int:
        """``nbytes`` of a base with ``params`` weights, before it is built."""
        return 3 * params * 4 + RowReservoir.bytes_for(hidden, dtype, least=MIN_ROWS) + 4

    @property
    def rows(self) -> int:
        """Rows it has drawn from, over its life."""
        return self._rows_before + self.reservoir.added

    @property
    def fitted(self) -> bool:
        return self.steps >= FIRST_STEPS

    def add(self, src: torch.Tensor, tgt: torch.Tensor) -> None:
        """Keep a share of one step's rows and count the steps they earn. src, tgt: (rows, D)."""
        stride = -(-src.shape[0] // ROWS_PER_STEP)
        before = self.reservoir.added
        self.reservoir.add(src[::stride], tgt[::stride])
        if not self.fitted:
            if self.reservoir.filled >= MIN_ROWS:
                self.owed = FIRST_STEPS - self.steps
            return
        self._credit += self.reservoir.added - before
        self.owed = min(MAX_OWED, self.owed + self._credit // REFRESH_ROWS)
        self._credit %= REFRESH_ROWS

    def _lr(self) -> float:
        if self.fitted:
            return REFRESH_LR
        return REFRESH_LR + (LR - REFRESH_LR) * 0.5 * (1 + math.cos(math.pi * self.steps / FIRST_STEPS))

    def step(self) -> None:
        """One Adam step on a minibatch of the reservoir (no host read of the device)."""
        src, tgt = self.reservoir.sample(BATCH, self.generator)  # (B, D) each
        src, tgt = src.unsqueeze(0), tgt.unsqueeze(0)
        with torch.enable_grad():
            sq = (self.arch.forward(self.params, src) - tgt).pow(2).sum(-1)  # (1, B)
            loss = sq.mean()
            grads = torch.autograd.grad(loss, list(self.params.values()))
        self.rel_err = (sq.sum() / tgt.pow(2).sum().clamp_min(1e-12)).detach()
        self._adam(grads, finite=torch.isfinite(loss).float())
        self.steps += 1
        self.owed = max(0, self.owed - 1)

    @torch.no_grad()
    def _adam(self, grads, finite: torch.Tensor) -> None:
        """Adam (betas 0.9/0.999, eps 1e-8) in place. A minibatch with a non-finite row
        contributes a zero gradient (``finite`` is 0), with no host read."""
        self._adam_steps += 1
        t, lr = self._adam_steps, self._lr()
        for (name, p), grad in zip(self.params.items(), grads):
            grad = torch.nan_to_num_(grad, nan=0.0, posinf=0.0, neginf=0.0).mul_(finite)
            m = self.exp_avg[name].mul_(_BETA1).add_(grad, alpha=1 - _BETA1)
            v = self.exp_avg_sq[name].mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
            denom = (v / (1 - _BETA2**t)).sqrt_().add_(_EPS)
            p.sub_(m / denom, alpha=lr / (1 - _BETA1**t))

    def snapshot(self) -> Params:
        """A copy of the weights, name -> (1, ...) float32 on the device."""
        return {k: v.detach().clone() for k, v in self.params.items()}
