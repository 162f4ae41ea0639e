"""Step: what the hooks of one forward batch hand to each other, in one explicit object.

SGLang builds a ForwardBatch per scheduled batch and passes it from the forward to the
sampling step (a delayed sample of the overlap scheduler included). The runtime attaches one
``Step`` to it (``forward_batch.esamp``) when the batch holds at least one ESamp row with a
slot, and every later hook of that batch reads and writes this object only:

1. ``ForwardBatch.init_new``: the rows' requests and their states;
2. ``ModelRunner.forward``: the forward's prefill lengths;
3. ``ModelRunner.sample``: the predictions and the row plan, the model's logits before
   SGLang's request processing, the tilt after it, the stratified rows' draw inside
   SGLang's sampler, then the training step.

The hidden states travel outside the Step, in SGLang's own fields, under one contract:

- ``LogitsProcessor._get_hidden_states_to_store`` (``runtime.store_hidden_states``): SGLang
  keeps the source layer's output, (rows, D), one row per sampled token; for the model's
  own LogitsProcessor under LAST capture ESamp widens it to (rows, 2D), ``[h1 | h]``, with
  the LM head's input h, the deep state the distiller predicts.
- ``ModelRunner.sample`` (``runtime.sample``): reads ``logits_output.hidden_states`` only if
  it is 2D wide (else the batch samples untilted and trains nothing), splits it into h1 and
  h, and puts h1 back, so SGLang and its callers see the shape they asked for. The
  training step gets (h1, h).
- ``ModelRunner._preprocess_logits`` (``runtime.apply_tilt``) runs inside SGLang's sample
  and has no batch argument: it finds the Step as ``runtime.active``, which ``sample`` sets
  for the length of SGLang's sample (and ``forward`` for the model's run) and clears after.
  With no active Step it leaves the logits alone. ``Sampler._sample_from_probs``
  (``runtime.draw``) finds it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core import BatchLayout
from .plan import RowPlan
from .requests import RequestState, live_slots
from .tilting import Pending


@dataclass
class Step:
    reqs: list  # SGLang's Req per batch row
    states: list[RequestState | None]  # per batch row
    extend_lens: list[int] | None = None  # per request: tokens this forward prefills (extend batches)
    prefix_lens: list[int] | None = None  # per request: tokens already cached before them
    layout: BatchLayout | None = None  # rows with a live slot, fixed at the first use
    plan: RowPlan | None = None
    h_hat: torch.Tensor | None = None  # (M, D) predictions for the layout's rows
    tilt_pending: Pending | None = field(default=None, repr=False)  # for the tilt inside sampling
    strata_rows: tuple | None = field(default=None, repr=False)  # (batch rows, table rows) of stratified rows, once read

    @classmethod
    def of(cls, reqs) -> Step | None:
        """The step of a batch, or None when no row has a live slot (ESamp leaves it alone)."""
        states = [getattr(r, "esamp", None) for r in reqs]
        if max(live_slots(states), default=-1) < 0:
            return None
        return cls(list(reqs), states)

    def batch_layout(self, device) -> BatchLayout:
        if self.layout is None:
            self.layout = BatchLayout.from_slots(live_slots(self.states), device)
        return self.layout

    def train_layout(self, device) -> BatchLayout:
        """The layout to train on: without rows whose request was released since planning
        (their slot may already belong to another group)."""
        slots = live_slots(self.states)
        if all(slots[r] >= 0 for r in self.layout.row_list):
            return self.layout
        return BatchLayout.from_slots(slots, device)

    def clear(self) -> None:
        """Drop what one forward and its sampling produced (the batch may be sampled once only)."""
        self.plan = self.h_hat = self.tilt_pending = None
