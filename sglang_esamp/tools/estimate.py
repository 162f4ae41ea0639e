"""``sglang-esamp bench --estimate``: ESamp's cost per decode step on a GPU-sized shape,
estimated on any machine, as a share of the model's own decode step.

ESamp's side is counted from its own code: one decode step of G groups of n rows runs the
bank's prediction and training step (``core/bank.py``; with ``train_every`` k, one step on k
decode steps' rows, counted as 1/k per decode step) and the dense tilt
(``core/tilt.py``, through a V x D bf16 head) on meta tensors: shapes without data, so a
70B shape costs no memory. Every aten op is counted as reading its tensor inputs and
writing its outputs (views move nothing), which is what eager PyTorch does without fusion:
an upper bound on memory traffic. FLOPs come from ``torch.utils.flop_counter`` (the matmuls).

The model's step is counted from its shape (Llama-style, bf16): its weights read once, each
row's KV cache read at ``context`` tokens, 2 FLOPs per weight per row plus attention.

Usage::

    est = estimate(hidden=4096, layers=32, vocab=32000, groups=32, n=16, distiller="mlp")
    est["esamp"]["bytes"] / est["model"]["bytes"]      # the byte share of one step
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from ..core.bank import DistillerBank
from ..core.config import ESampConfig
from ..core.head import Head, VocabMoments
from ..core.layout import BatchLayout
from ..core.tilt import tilt_dense

META = torch.device("meta")


class _Bytes(TorchDispatchMode):
    """Bytes every op reads and writes, by the op's name."""

    def __init__(self):
        super().__init__()
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            moved = sum(t.numel() * t.element_size() for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor))
            name = func.overloadpacket.__name__
            self.by_op[name] = self.by_op.get(name, 0) + moved
        return out


def _count(fn) -> dict:
    with _Bytes() as moved, FlopCounterMode(display=False) as flops:
        fn()
    return {"bytes": sum(moved.by_op.values()), "flops": flops.get_total_flops()}


def model_step(hidden: int, layers: int, vocab: int, intermediate: int, kv_dim: int, rows: int, context: int) -> dict:
    """A Llama-style bf16 decode step of ``rows`` rows at ``context`` tokens each."""
    weights = layers * (2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * intermediate) + 2 * vocab * hidden
    kv = rows * layers * 2 * kv_dim * context  # elements read by attention
    return {"bytes": 2 * (weights + kv), "flops": 2 * weights * rows + 4 * rows * layers * hidden * context, "weights": weights}


def esamp_step(hidden: int, vocab: int, groups: int, n: int, cfg: ESampConfig) -> dict:
    """One decode step of ESamp's own code: predict, dense residual tilt, train (a 1/k share
    of a step on k decode steps' rows with ``train_every`` k), per part."""
    bank = DistillerBank(cfg, hidden, device=META)
    layout = BatchLayout.from_slots([g for g in range(groups) for _ in range(n)], META)
    rows = groups * n
    h1, h = torch.empty(rows, hidden, device=META, dtype=torch.bfloat16), torch.empty(rows, hidden, device=META, dtype=torch.bfloat16)
    head = Head(torch.empty(vocab, hidden, device=META, dtype=torch.bfloat16))
    moments = VocabMoments(torch.empty(hidden, hidden, device=META), torch.empty(hidden, device=META), 0.0,
                           torch.empty(hidden, device=META), 0.0, 1.0)
    logits = torch.empty(rows, vocab, device=META)
    beta = torch.empty(rows, device=META)
    pred = {}
    k = cfg.train_every
    held = BatchLayout.stacked([layout] * k, META)
    src, tgt = (torch.empty(k * rows, hidden, device=META, dtype=torch.bfloat16) for _ in range(2))  # k steps' rows
    train = _count(lambda: bank.train_step(held, src, tgt))
    parts = {
        "predict": _count(lambda: pred.setdefault("h_hat", bank.predict(layout, h1))),
        "tilt": _count(lambda: tilt_dense(logits, h, pred["h_hat"], head, beta, "residual", moments)),
        "train": {key: value / k for key, value in train.items()},
    }
    total = {k: sum(p[k] for p in parts.values()) for k in ("bytes", "flops")}
    return total | {"parts": parts, "bytes_per_group": bank.bytes_per_group}


def estimate(hidden: int, layers: int, vocab: int, groups: int, n: int, distiller: str = "mlp", intermediate: int | None = None,
             kv_dim: int | None = None, context: int = 128, cfg: ESampConfig | None = None, train_every: int = 1,
             optimizer: str | None = None) -> dict:
    """ESamp's step and the model's, for one shape; ``cfg`` defaults to the server's defaults
    with this distiller, optimizer, ``train_every`` and ``groups`` slots."""
    intermediate = intermediate or 256 * -(-8 * hidden // (3 * 256))  # Llama's rounding: 11008 at 4096
    cfg = cfg or ESampConfig(distiller=distiller, max_groups=groups, train_every=train_every,
                             optimizer=optimizer or ESampConfig().optimizer)
    model = model_step(hidden, layers, vocab, intermediate, kv_dim or hidden, groups * n, context)
    esamp = esamp_step(hidden, vocab, groups, n, cfg)
    share = {k: esamp[k] / model[k] for k in ("bytes", "flops")}
    return {"shape": {"hidden": hidden, "layers": layers, "vocab": vocab, "intermediate": intermediate, "context": context,
                      "groups": groups, "n": n, "distiller": cfg.distiller, "optimizer": cfg.optimizer,
                      "train_every": cfg.train_every},
            "model": model, "esamp": esamp, "share": share}


def table(results: list[dict]) -> str:
    lines = ["| distiller (optimizer, train every) | groups x n | model step GB | ESamp GB (predict / tilt / train) | bytes share | "
             "model step TFLOP | ESamp GFLOP | FLOP share |", "| --- " * 8 + "|"]
    for r in results:
        s, m, e = r["shape"], r["model"], r["esamp"]
        split = " / ".join(f"{e['parts'][k]['bytes'] / 1e9:.2f}" for k in ("predict", "tilt", "train"))
        lines.append(f"| {s['distiller']} ({s['optimizer']}, {s['train_every']}) | {s['groups']}x{s['n']} | {m['bytes'] / 1e9:.1f} | "
                     f"{e['bytes'] / 1e9:.2f} ({split}) | "
                     f"{r['share']['bytes']:.1%} | {m['flops'] / 1e12:.2f} | {e['flops'] / 1e9:.1f} | {r['share']['flops']:.2%} |")
    return "\n".join(lines)
