"""What ESamp keeps on the device: counted from the config before anything is built (what the
KV-cache budget gives up, ``hooks.kv_cache_budget``), and measured on a built runtime.

Both count the same parts: the distiller bank (weights, plus two moments with Adam, for every
slot, in float32), the per-slot stats, the per-request novelty and code table, the head's moments
(residual tilt; the Gram matrix in the model's dtype), and with a calibrated init the base distiller (weights, Adam moments, the
bank's copy) and its row reservoir. Of the per-step temporaries, the gathered head rows
of the plausible and candidate forms are bounded (``core.head.GATHER_BYTES``) and reserved
too (``step_bytes``); the tilted rows' logits, the size of SGLang's own logits, are not: they
live and die within a step, like SGLang's activations.

Usage::

    parts = reserved_bytes(cfg, hidden=576, dtype=torch.bfloat16)   # {"bank": ..., ...}
    held = held_bytes(runtime)                                       # the same parts, measured
"""

from __future__ import annotations

import math

import torch

from ..core.config import ESampConfig
from ..core.distiller import build_architecture
from ..core.head import GATHER_BYTES
from ..core.stats import FIELDS as STATS_FIELDS
from ..core.warm_base import WarmBase
from .requests import MAX_TRACKED_REQUESTS


def reserved_bytes(cfg: ESampConfig, hidden: int, dtype: torch.dtype, tp_size: int = 1, vocab: int = 0) -> dict[str, int]:
    arch = build_architecture(cfg.distiller, hidden, cfg.intermediate, cfg.rank, cfg.tail_units or None)
    params = sum(math.prod(shape) for shape in arch.shapes().values())  # per group
    base = sum(math.prod(shape) for shape in arch.base_arch.shapes().values())
    parts = {
        "bank": cfg.max_groups * (cfg.state_copies * params * 4 + 4),
        "stats": cfg.max_groups * len(STATS_FIELDS) * 8,
        "requests": 2 * MAX_TRACKED_REQUESTS * 4 + 2 * MAX_TRACKED_REQUESTS * 8,  # novelty sum and count; code and bits
    }
    if cfg.tilt == "residual":
        parts["head moments"] = hidden * hidden * dtype.itemsize + 2 * hidden * 4  # the Gram matrix in the head's dtype
    if cfg.calibrated:
        parts["base"] = WarmBase.bytes_for(base, hidden, dtype) + base * 4
    if tp_size > 1:  # each rank gathers the whole LM head once (runtime.py), padded as SGLang pads it
        rows = padded_vocab(vocab, tp_size)
        parts["gathered head"] = rows * (hidden + 1) * dtype.itemsize  # the weight, and a bias if the head has one
    return parts


def padded_vocab(vocab: int, tp_size: int, pad_to: int = 64) -> int:
    """The LM head's rows once SGLang pads the vocabulary: to a multiple of 64, or of 64 x the TP
    size when the ranks would not split it evenly."""
    rows = -(-vocab // pad_to) * pad_to
    if rows % tp_size:
        rows = -(-vocab // (pad_to * tp_size)) * pad_to * tp_size
    return rows


def step_bytes() -> dict[str, int]:
    """The bounded per-step temporaries the KV budget also gives up: one block of gathered head rows."""
    return {"tilt scratch": GATHER_BYTES}


def held_bytes(runtime) -> dict[str, int]:
    """The same parts as ``reserved_bytes``, summed over the runtime's tensors."""
    size = lambda tensors: sum(t.nbytes for t in tensors)  # noqa: E731
    bank = runtime.bank
    parts = {
        "bank": size([*bank.params.values(), *bank.exp_avg.values(), *bank.exp_avg_sq.values(), bank.step_count]),
        "stats": size(runtime.stats.table.values()),
        "requests": size([runtime.requests.novelty_sum, runtime.requests.novelty_count, runtime.requests.strata.codes.code,
                          runtime.requests.strata.codes.bits]),
    }
    moments = runtime.tilter.moments
    if moments is not None:
        parts["head moments"] = size([moments.gram, moments.cross, moments.mean_row])
    if runtime.warm is not None:
        parts["base"] = runtime.warm.nbytes + size((bank.base or {}).values())
    if runtime.tp_size > 1:
        head = runtime.tilter.head
        parts["gathered head"] = head.weight.nbytes + (0 if head.bias is None else head.bias.nbytes)
    return parts
