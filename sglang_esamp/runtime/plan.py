"""The row planner: which form of the tilt each row of a batch takes, decided once per step.

Every path that touches a row (the tilt, the sampling parameters SGLang samples with, the
counters) reads this one plan. A row is in the plan when its request holds a distiller
slot; its form is one of:

| form | when | what is tilted (core/tilt.py) |
| --- | --- | --- |
| ``UNTILTED`` | explore = 0, or a shared prefix (below) | nothing (the row still trains its group) |
| ``DENSE`` | explore > 0, no top-k/top-p/min-p, guard and tail floor off | every token |
| ``PLAUSIBLE`` | as DENSE, with ``--esamp-tail-floor`` > 0 | the plausible tokens; the rest keep their probabilities |
| ``CANDIDATES`` | explore > 0 with top-k/top-p/min-p, or the guard on | the tokens the filters (or the guard) keep |

Both forms compute the one tilt of ``core/tilt.py`` after SGLang's request processing, in
eager forwards and replayed CUDA graphs alike.

With ``--esamp-shared-prefix-tilt off``, a row whose output so far equals another running
sample's of its group (``prefixes.py``) is ``UNTILTED`` until it diverges.

Greedy rows (top-k 1) count as unfiltered: they take the argmax of the tilted logits.
Everything here is decided from host-side request values; nothing reads the device.

Usage::

    plan = plan_rows(states, [r.sampling_params for r in reqs], layout, cfg, vocab)
    plan.rows(Form.CANDIDATES)        # indices into layout.rows
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ..core import BatchLayout, ESampConfig


class Form(enum.Enum):
    UNTILTED = "untilted"
    DENSE = "dense"
    PLAUSIBLE = "plausible"
    CANDIDATES = "candidates"


TILTED = (Form.DENSE, Form.PLAUSIBLE, Form.CANDIDATES)


@dataclass(frozen=True)
class RowPlan:
    layout: BatchLayout  # the rows that hold a slot
    forms: tuple[Form, ...]  # per layout row
    betas: tuple[float, ...]  # per layout row
    floors: tuple[float, ...]  # per layout row: the guard's floor on a CANDIDATES row without filters, else 0
    greedy: tuple[bool, ...]  # per layout row: top-k 1
    min_p_only: bool  # no CANDIDATES row has top-k or top-p, so its keep set needs no sort

    def rows(self, form: Form) -> list[int]:
        """Indices into ``layout.rows`` of the rows that take ``form``."""
        return [i for i, f in enumerate(self.forms) if f is form]


def is_filtered(params, vocab: int) -> bool:
    """Sampled (not greedy) with top-k, top-p or min-p."""
    return params.top_k != 1 and (0 < params.top_k < vocab or params.top_p < 1.0 or params.min_p > 0.0)


def plan_rows(states: Sequence, params: Sequence, layout: BatchLayout, cfg: ESampConfig, vocab: int,
              shared: set[int] = frozenset()) -> RowPlan:
    """``states[r]`` and ``params[r]``: the RequestState and SamplingParams of batch row r;
    ``shared``: batch rows that still share their group's prefix (``prefixes.py``), left
    untilted with ``--esamp-shared-prefix-tilt off``."""
    guard = cfg.plausibility
    forms, betas, floors, greedy = [], [], [], []
    min_p_only = True
    untilted = shared if cfg.shared_prefix_tilt == "off" else frozenset()
    for row in layout.row_list:
        beta, sp = (0.0 if row in untilted else states[row].beta), params[row]
        filtered = is_filtered(sp, vocab)
        if beta <= 0:
            form = Form.UNTILTED
        elif filtered or guard > 0:
            form = Form.CANDIDATES
            min_p_only &= not filtered or (not 0 < sp.top_k < vocab and sp.top_p >= 1.0)
        elif cfg.tail_floor > 0:
            form = Form.PLAUSIBLE
        else:
            form = Form.DENSE
        forms.append(form)
        betas.append(beta)
        floors.append(guard if form is Form.CANDIDATES and not filtered else 0.0)
        greedy.append(sp.top_k == 1)
    return RowPlan(layout, tuple(forms), tuple(betas), tuple(floors), tuple(greedy), min_p_only)
