"""Applying the tilt to one step's rows, in the form the row planner chose for each.

``Tilter`` holds what every form needs from the model's LM head (its weight, and for the
residual mode the head's centred Gram matrix and mean row) and the stop cap:

- ``mix_head_input`` (eager forwards, before the head): the HEAD_INPUT rows' mixed state,
  one head matmul for tilted and untilted rows alike;
- ``head_logits`` (the head call): the head on that mixed state, stop cap applied;
- ``after_head`` (after SGLang's penalties, grammar mask and logit bias): the DENSE rows
  over the whole vocabulary, the CANDIDATES rows within the tokens their filters (or the
  guard) keep from these very logits.

``sampling_params_for`` gives the SamplingBatchInfo SGLang samples with: the CANDIDATES
rows already carry -inf outside their kept set, so their filters are made neutral (greedy
rows keep top-k 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..core.tilt import head_gram, mix_hidden, mix_residual, tilt_candidates, tilt_dense
from .filters import filter_mask
from .plan import Form, RowPlan
from .stop_cap import StopCap


@dataclass
class HeadInput:
    """The mixed LM-head input of one eager forward."""

    src: torch.Tensor | None  # (batch, D) the head input it replaces; None once the head has read ``mixed``
    mixed: torch.Tensor  # (batch, D) what the head reads instead
    rows: torch.Tensor  # (L,) batch rows of the HEAD_INPUT rows
    shift: torch.Tensor  # (L,) the mixed logits' per-row offset (core.tilt.mix_residual)

    @property
    def read(self) -> bool:
        return self.src is None


class Tilter:
    def __init__(self, mode: str, head_weight: torch.Tensor, vocab: int | None, stop_cap: StopCap):
        self.mode = mode
        # (V_padded, D). On a CPU a float32 copy: without native bf16, bf16 matmuls are emulated
        # (docs/results/speed.md has the measurement).
        self.head_weight = head_weight.detach().float() if head_weight.device.type == "cpu" else head_weight
        self.vocab = vocab or head_weight.shape[0]
        self.stop_cap = stop_cap
        if mode == "residual":  # the affine fit over the whole vocabulary, in D dimensions
            self.gram = head_gram(self.head_weight[: self.vocab])  # (D, D)
            self.head_mean = self.head_weight[: self.vocab].float().mean(0)  # (D,)

    @staticmethod
    def _select(plan: RowPlan, form: Form, device) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The rows that take ``form``: indices into the plan's rows (host and (n,) device),
        their (n,) batch rows and (n,) betas; None if there are none."""
        part = plan.rows(form)
        if not part:
            return None
        idx = torch.tensor(part, device=device)
        beta = torch.tensor([plan.betas[i] for i in part], device=device)
        return part, idx, plan.layout.rows[idx], beta

    def mix_head_input(self, h: torch.Tensor, h_hat: torch.Tensor, plan: RowPlan) -> HeadInput | None:
        """h: (batch, D) the head input; h_hat: (M, D) predictions for the plan's rows."""
        picked = self._select(plan, Form.HEAD_INPUT, h.device)
        if picked is None:
            return None
        _, idx, rows, beta = picked
        if self.mode == "residual":
            mixed_rows, shift = mix_residual(h[rows], h_hat[idx], beta, self.gram, self.head_mean)
        else:
            mixed_rows, shift = mix_hidden(h[rows], h_hat[idx], beta), torch.zeros_like(beta)
        mixed = h.clone()
        mixed[rows] = mixed_rows
        return HeadInput(h, mixed, rows, shift)

    def head_logits(self, head_in: HeadInput, head_fn, hidden_states: torch.Tensor, temps: torch.Tensor) -> torch.Tensor | None:
        """The head's logits of the mixed state, if ``hidden_states`` is the very input it
        replaces (once); None otherwise. temps: (batch,) the rows' temperatures."""
        if head_in.read or head_in.src is not hidden_states:
            return None
        src, head_in.src = head_in.src, None
        logits = head_fn(head_in.mixed)  # (batch, V)
        self.stop_cap.head_input(logits, src[head_in.rows], head_in.rows, head_in.shift, temps, self.head_weight)
        return logits

    def after_head(self, plan: RowPlan, h_hat: torch.Tensor, logits: torch.Tensor, info) -> None:
        """Tilt the DENSE and CANDIDATES rows of ``logits`` (batch, V) in place. ``info``: the
        batch's SamplingBatchInfo before ``sampling_params_for``, whose filters define the candidates."""
        head = self.head_weight[: logits.shape[-1]]
        picked = self._select(plan, Form.DENSE, logits.device)
        if picked is not None:
            _, idx, r, beta = picked
            before = logits[r]
            tilted = tilt_dense(before, h_hat[idx], head, beta, mode=self.mode)
            logits[r] = self.stop_cap.after_tilt(tilted, before, info.temperatures[r])
        picked = self._select(plan, Form.CANDIDATES, logits.device)
        if picked is not None:
            part, idx, r, beta = picked
            before = logits[r]
            keep = self._keep(plan, part, r, before, info)
            tilted = tilt_candidates(before, h_hat[idx], head, beta, keep, mode=self.mode)
            logits[r] = self.stop_cap.after_tilt(tilted, before, info.temperatures[r], keep)

    @staticmethod
    def _keep(plan: RowPlan, part: list[int], r: torch.Tensor, logits: torch.Tensor, info) -> torch.Tensor:
        """(n, V) the tokens the CANDIDATES rows ``r`` keep: their own filters, or, for a row
        without filters, the guard's plausibility floor (the min-p rule) at its temperature."""
        floor = torch.tensor([plan.floors[i] for i in part], device=logits.device)
        guarded = floor > 0
        top_k = torch.where(guarded, torch.full_like(info.top_ks[r], logits.shape[-1]), info.top_ks[r])
        top_p = torch.where(guarded, torch.ones_like(info.top_ps[r]), info.top_ps[r])
        min_p = torch.where(guarded, floor.to(info.min_ps.dtype), info.min_ps[r])
        return filter_mask(logits, info.temperatures[r].view(-1), top_k, top_p, min_p, plan.min_p_only)


def sampling_params_for(plan: RowPlan, info, vocab: int):
    """The SamplingBatchInfo to sample with: neutral filters on the sampled CANDIDATES rows
    (greedy rows keep top-k 1); ``info`` itself when no row changes."""
    sampled = [plan.layout.row_list[i] for i in plan.rows(Form.CANDIDATES) if not plan.greedy[i]]
    if not sampled:
        return info
    out = dataclasses.replace(info, top_ks=info.top_ks.clone(), top_ps=info.top_ps.clone(), min_ps=info.min_ps.clone())
    out.top_ks[sampled] = vocab
    out.top_ps[sampled] = 1.0
    out.min_ps[sampled] = 0.0
    return out
