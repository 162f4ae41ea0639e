"""Applying the tilt of ``core/tilt.py`` to one step's rows, in the form the row planner chose.

Two moments of SGLang's sampling step:

- ``capture`` (before SGLang's request processing): what the tilt needs of the step; on a
  softcapped head also the model's own logits ``l`` of the tilted rows, which penalties,
  logit bias and grammar are about to overwrite in place (a linear head's tilt needs only
  the states, core/tilt.py);
- ``after_processing`` (after it): ``x + beta t`` on the DENSE rows over the whole vocabulary,
  on the PLAUSIBLE rows within their plausible tokens, whose total probability stays
  (``plausible_tilt``; only those tokens and the stop ids are written), and on the
  CANDIDATES rows within the tokens their filters (or the guard) keep from these very
  logits; then the stop cap against the untilted ``x``. Under the ``hold`` cap the
  PLAUSIBLE and CANDIDATES forms leave the stop ids out of the tilt instead, which holds
  their probability without a pass over the vocabulary (only the K tokens are written).

``sampling_params_for`` gives the SamplingBatchInfo SGLang samples with: the CANDIDATES
rows already carry -inf outside their kept set, so their filters are made neutral (greedy
rows keep top-k 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..core import Head, StopCap, VocabMoments, plausible_tilt, tilt_candidates, tilt_dense
from .filters import filter_mask
from .plan import TILTED, Form, RowPlan


@dataclass
class Pending:
    """One step's tilt, between ``capture`` and ``after_processing``."""

    plan: RowPlan
    h: torch.Tensor  # (rows, D) the LM head's input, per batch row
    h_hat: torch.Tensor  # (M, D) predictions, per layout row
    model_logits: dict  # Form -> (n, V) the model's own logits of that form's rows (softcapped heads only)
    info: object  # the batch's SamplingBatchInfo before ``sampling_params_for``
    forward_batch: object


class Tilter:
    def __init__(self, mode: str, head: Head, stop_cap: StopCap, tail_floor: float = 0.0, entropy: str = "free",
                 max_gain: float = 0.0):
        self.mode, self.head, self.stop_cap = mode, head, stop_cap
        # the PLAUSIBLE form's floor, entropy rule and bound on any token's gain
        self.tail_floor, self.entropy, self.max_gain = tail_floor, entropy, max_gain
        # the residual fit over the whole vocabulary for candidate rows, in D dimensions
        self.moments = VocabMoments.of(head) if mode == "residual" and head.linear else None

    @property
    def vocab(self) -> int:
        return self.head.weight.shape[0]

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

    def capture(self, plan: RowPlan, h: torch.Tensor, h_hat: torch.Tensor, logits: torch.Tensor, info, forward_batch) -> Pending | None:
        """Keep what the tilt needs from the (rows, V) ``logits`` before SGLang processes them;
        None when no row is tilted."""
        forms = [form for form in TILTED if plan.rows(form)]  # host-side: no device work for a linear head
        if not forms:
            return None
        model_logits = {form: None if self.head.linear else logits[self._select(plan, form, logits.device)[2]]  # (n, V), a copy
                        for form in forms}
        return Pending(plan, h, h_hat, model_logits, info, forward_batch)

    def after_processing(self, pending: Pending, logits: torch.Tensor) -> None:
        """Tilt the DENSE, PLAUSIBLE and CANDIDATES rows of the processed ``logits`` (rows, V). All forms
        are computed aside and written into ``logits`` last, so that a fault on the way leaves
        every row as SGLang made it: the rows then sample untilted. A PLAUSIBLE row changes at
        its K plausible tokens and its stop ids only, and only those are written."""
        plan, info = pending.plan, pending.info
        head = self.head if logits.shape[-1] == self.vocab else self.head.sliced(logits.shape[-1])
        writes = []  # (batch rows or None for all of them, (n, C) token ids or None for all of them, (n, C or V) values)
        picked = self._select(plan, Form.DENSE, logits.device)
        if picked is not None:
            part, idx, r, beta = picked
            whole = len(part) == logits.shape[0]  # every batch row takes this form (layout rows ascend): rows 0..n-1
            x = logits if whole else logits[r]  # the batch itself when every row takes it: no gather
            temps = info.temperatures[r]
            ref = self.stop_cap.reference(x, temps)
            tilted = tilt_dense(x, pending.h[r], pending.h_hat[idx], head, beta, self.mode, self.moments,
                                pending.model_logits[Form.DENSE])
            writes.append((None if whole else r, None, self.stop_cap.apply(tilted, ref, temps)))
        picked = self._select(plan, Form.PLAUSIBLE, logits.device)
        if picked is not None:
            part, idx, r, beta = picked
            whole = len(part) == logits.shape[0]
            x = logits if whole else logits[r]
            temps = info.temperatures[r].view(-1)
            held = self.stop_cap.stop_ids if self.stop_cap.holds else None  # left untilted: no cap needed
            ids, before, after = plausible_tilt(x, pending.h[r], pending.h_hat[idx], head, beta, self.mode, temps,
                                                self.tail_floor, self.moments, pending.model_logits[Form.PLAUSIBLE],
                                                entropy=self.entropy, max_gain=self.max_gain, held=held)
            stops = None if held is not None else self.stop_cap.plausible(x, ids, before, after, temps)  # (n, S) or None
            writes.append((None if whole else r, ids, after))
            if stops is not None:  # after the K values: a stop id among them takes its capped value
                writes.append((None if whole else r, self.stop_cap.stop_ids.expand(len(part), -1), stops))
        picked = self._select(plan, Form.CANDIDATES, logits.device)
        if picked is not None:
            part, idx, r, beta = picked
            x = logits[r]
            keep = self._keep(plan, part, r, x, info)
            temps = info.temperatures[r].view(-1)
            held = self.stop_cap.stop_ids if self.stop_cap.holds else None  # left untilted: no cap needed
            tilted = tilt_candidates(x, pending.h[r], pending.h_hat[idx], head, beta, keep, self.mode, self.moments,
                                     pending.model_logits[Form.CANDIDATES], held, temps)
            writes.append((r, None, tilted if held is not None else self.stop_cap(tilted, x, temps, keep)))
        for rows, cols, values in writes:
            if cols is not None:
                if rows is None:
                    logits.scatter_(1, cols, values)
                else:
                    logits[rows.unsqueeze(-1), cols] = values
            elif rows is None:
                logits.copy_(values)
            else:
                logits[rows] = values

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
