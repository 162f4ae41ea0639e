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
