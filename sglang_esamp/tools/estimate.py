"""``sglang-esamp bench --estimate``: ESamp's cost per decode step on a GPU-sized shape,
estimated on any machine, as a share of the model's own decode step.

ESamp's side is counted from its own code: one decode step of G groups of n rows runs the
bank's prediction and training step (``core/bank.py``; with ``train_every`` k, one step on k
decode steps' rows, counted as 1/k per decode step) and the tilt of a row without filters
at the server's defaults with its stop cap (``core/tilt.py``: the plausible form, through a
V x D bf16 head; ``core/stop_cap.py``) on meta tensors: shapes without data, so a 70B shape
costs no memory. The head is the one a CUDA server with Triton has: its gathered rows'
products in one kernel (``core/rows_dot.py``), counted as reading each picked row once.
Every other aten op that launches a kernel is counted as reading its tensor inputs and
writing its outputs (views and allocations move nothing; a gather reads only the rows it
picks, a scatter writes only the rows it puts), which is what eager PyTorch does without
fusion: an upper bound on memory traffic. FLOPs come from torch's flop formulas (the
matmuls; ``FLOPS`` for the kernel).

Time is a roofline on an H100 SXM, per op: the larger of its bytes over 3.35 TB/s and its
FLOPs over the peak of its input dtype (989 TFLOP/s dense bf16 and fp16; 67 TFLOP/s in
fp32, which torch's default matmul precision keeps off the tensor cores). Launches are the
kernels one step issues in eager mode; a captured CUDA graph replays each part (predict,
tilt, train) as one launch holding the same kernels.

The model's step is counted from its shape (Llama-style, bf16): its weights read once, each
row's KV cache read at ``context`` tokens, 2 FLOPs per weight per row plus attention; its
time is the roofline of its matmuls plus that of its attention.

Usage::

    est = estimate(hidden=4096, layers=32, vocab=32000, groups=32, n=16, distiller="tail")
    est["esamp"]["bytes"] / est["model"]["bytes"]      # the byte share of one step
    est["share"]["seconds"]                              # the H100 roofline time share
    print(table([estimate(groups=32, n=16, **MODELS["qwen2.5-7b"])]))
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from ..core.bank import DistillerBank
from ..core.config import ESampConfig
from ..core.distiller import build_architecture
from ..core.head import Head, VocabMoments
from ..core.layout import BatchLayout
from ..core.stop_cap import StopCap
from ..core.tilt import center_on_group, plausible_tilt, tilt_dense

META = torch.device("meta")
H100_BYTES_PER_S = 3.35e12
H100_FLOPS_PER_S = {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12}
GATHERS = {"index", "gather", "index_select", "embedding", "take"}
SCATTERS = {"index_put_", "index_put", "index_copy_", "index_copy", "scatter_", "scatter", "scatter_add_", "index_add_"}
NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "lift_fresh", "detach", "alias", "_unsafe_view"}
FLOPS = {"rows_dot": lambda x, weight, idx, out_val: 2 * idx.numel() * x.shape[-1]}  # ops torch has no formula for
MODELS = {  # decoder shapes from the models' configs: kv_dim = key/value heads x head dim
    "llama-2-7b": dict(hidden=4096, layers=32, vocab=32000, intermediate=11008, kv_dim=4096),
    "qwen2.5-7b": dict(hidden=3584, layers=28, vocab=152064, intermediate=18944, kv_dim=512),
    "llama-3-70b": dict(hidden=8192, layers=80, vocab=128256, intermediate=28672, kv_dim=1024),
}


def roofline(moved: float, flops: float, dtype: torch.dtype = torch.bfloat16) -> float:
    """Seconds an op takes on an H100 at its bound: memory or compute."""
    return max(moved / H100_BYTES_PER_S, flops / H100_FLOPS_PER_S.get(dtype, H100_FLOPS_PER_S[torch.float32]))


class _Ops(TorchDispatchMode):
    """Each kernel-launching op's bytes, FLOPs and roofline time, summed."""

    def __init__(self):
        super().__init__()
        self.bytes = self.flops = self.seconds = 0.0
        self.launches = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func.overloadpacket.__name__ in NO_KERNEL:
            return out
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        moved = _moved(func.overloadpacket.__name__, args, out, tensors)
        formula = FLOPS.get(func.overloadpacket.__name__) or flop_registry.get(func.overloadpacket)
        flops = formula(*args, **kwargs, out_val=out) if formula is not None else 0
        self.bytes += moved
        self.flops += flops
        self.seconds += roofline(moved, flops, tensors[0].dtype if tensors else torch.float32)
        self.launches += 1
        return out


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(tensors) if isinstance(t, torch.Tensor))


def _moved(name: str, args, out, tensors) -> int:
    """Bytes an op reads and writes: every tensor it takes and makes, except that a gather
    reads only the rows it picks and a scatter writes only the rows it puts (not their whole
    source or destination)."""
    if name in GATHERS:  # (source, ..., index): read and write the output, read the index
        return 2 * _nbytes(out) + _nbytes(args[1:])
    if name in SCATTERS:  # (destination, ..., index, values): read the values and index, write the rows
        return 2 * _nbytes(args[-1]) + _nbytes(args[1:-1])
    if name == "rows_dot":  # (states, head, ids): the one kernel reads each picked head row once
        x, weight, idx = args
        return _nbytes(x) + _nbytes(idx) + idx.numel() * weight.shape[1] * weight.element_size() + _nbytes(out)
    if name == "index_fill_":  # (destination, dim, index, value)
        dest, dim, index = args[:3]
        return dest.numel() // max(dest.shape[dim], 1) * index.numel() * dest.element_size() + _nbytes(index)
    return _nbytes(tensors)


def count(fn) -> dict:
    """Bytes, FLOPs, H100 roofline seconds and kernel launches of what ``fn`` runs."""
    with _Ops() as ops:
        fn()
    return {"bytes": ops.bytes, "flops": ops.flops, "seconds": ops.seconds, "launches": ops.launches}


def model_step(hidden: int, layers: int, vocab: int, intermediate: int, kv_dim: int, rows: int, context: int) -> dict:
    """A Llama-style bf16 decode step of ``rows`` rows at ``context`` tokens each."""
    weights = layers * (2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * intermediate) + 2 * vocab * hidden
    kv = rows * layers * 2 * kv_dim * context  # elements read by attention
    matmuls, attention = (2 * weights, 2 * weights * rows), (2 * kv, 4 * rows * layers * hidden * context)
    return {"bytes": matmuls[0] + attention[0], "flops": matmuls[1] + attention[1], "weights": weights,
            "seconds": roofline(*matmuls) + roofline(*attention)}


def esamp_step(hidden: int, vocab: int, groups: int, n: int, cfg: ESampConfig) -> dict:
    """One decode step of ESamp's own code: predict, the default tilt (``tilt``), train (a 1/k share
    of a step on k decode steps' rows with ``train_every`` k), per part."""
    arch = build_architecture(cfg.distiller, hidden, cfg.intermediate, cfg.rank, cfg.tail_units or None)
    base = {k: torch.empty(1, *shape, device=META) for k, shape in arch.base_arch.shapes().items()}  # a calibrated server's
    bank = DistillerBank(cfg, hidden, device=META, base=base)
    layout = BatchLayout.from_slots([g for g in range(groups) for _ in range(n)], META)
    rows = groups * n
    h1, h = torch.empty(rows, hidden, device=META, dtype=torch.bfloat16), torch.empty(rows, hidden, device=META, dtype=torch.bfloat16)
    head = Head(torch.empty(vocab, hidden, device=META, dtype=torch.bfloat16), fused=True)  # as on CUDA with Triton
    moments = VocabMoments(torch.empty(hidden, hidden, device=META, dtype=torch.bfloat16), torch.empty(hidden, device=META), 0.0,
                           torch.empty(hidden, device=META), 0.0, 1.0)
    logits = torch.empty(rows, vocab, device=META)
    beta = torch.empty(rows, device=META)
    pred = {}
    k = cfg.train_every
    held = BatchLayout.stacked([layout] * k, META)
    src, tgt = (torch.empty(k * rows, hidden, device=META, dtype=torch.bfloat16) for _ in range(2))  # k steps' rows
    train = count(lambda: bank.train_step(held, src, tgt))
    parts = {
        "predict": count(lambda: pred.setdefault("h_hat", bank.predict(layout, h1))),
        "tilt": count(lambda: tilt(logits, h, pred["h_hat"], head, beta, cfg, moments, layout)),
        "train": {key: value / k for key, value in train.items()},
    }
    total = {k: sum(p[k] for p in parts.values()) for k in ("bytes", "flops", "seconds", "launches")}
    return total | {"parts": parts, "bytes_per_group": bank.bytes_per_group}


def tilt(logits, h, h_hat, head: Head, beta, cfg: ESampConfig, moments: VocabMoments, layout: BatchLayout,
         cap: StopCap | None = None):
    """The tilt a row without top-k/top-p/min-p gets from the server's defaults, with its stop
    cap (``cap``, or one stop id), as the sampler's hook runs it (runtime/tilting.py): the
    predictions centered on their groups (``layout``) with ``tilt_center`` group, then the
    plausible form at ``tail_floor``, written at its changed tokens (the stop ids left out of
    it under ``hold``, capped after it otherwise), or the dense form at 0, at temperature 1.
    In place on ``logits``."""
    if cfg.tilt_center == "group":
        h_hat = center_on_group(h[layout.rows], h_hat, layout.row_group, layout.num_groups)
    temps = torch.ones(h.shape[0], device=h.device)
    cap = cap or StopCap([0], cfg.stop_cap, h.device)
    if cfg.tail_floor > 0:
        held = cap.stop_ids if cap.holds else None
        ids, before, after = plausible_tilt(logits, h, h_hat, head, beta, cfg.tilt, temps, cfg.tail_floor, moments,
                                            entropy=cfg.tilt_entropy, max_gain=cfg.tilt_max_gain, held=held)
        stops = None if held is not None else cap.plausible(logits, ids, before, after, temps)
        logits.scatter_(1, ids, after)
        if stops is not None:
            logits[:, cap.stop_ids] = stops
        return logits
    ref = cap.reference(logits, temps)
    return logits.copy_(cap.apply(tilt_dense(logits, h, h_hat, head, beta, cfg.tilt, moments), ref, temps))


def estimate(hidden: int, layers: int, vocab: int, groups: int, n: int, distiller: str | None = None, intermediate: int | None = None,
             kv_dim: int | None = None, context: int = 128, cfg: ESampConfig | None = None, train_every: int = 1,
             optimizer: str | None = None) -> dict:
    """ESamp's step and the model's, for one shape; ``cfg`` defaults to the server's defaults
    with this distiller (default: the server's), optimizer, ``train_every`` and ``groups`` slots."""
    intermediate = intermediate or 256 * -(-8 * hidden // (3 * 256))  # Llama's rounding: 11008 at 4096
    cfg = cfg or ESampConfig(distiller=distiller or ESampConfig().distiller, max_groups=groups, train_every=train_every,
                             optimizer=optimizer or ESampConfig().optimizer)
    model = model_step(hidden, layers, vocab, intermediate, kv_dim or hidden, groups * n, context)
    esamp = esamp_step(hidden, vocab, groups, n, cfg)
    share = {k: esamp[k] / model[k] for k in ("bytes", "flops", "seconds")}
    name = _name(hidden, layers, vocab, intermediate, kv_dim or hidden)
    return {"shape": {"model": name, "hidden": hidden, "layers": layers, "vocab": vocab, "intermediate": intermediate,
                      "context": context, "groups": groups, "n": n, "distiller": cfg.distiller, "optimizer": cfg.optimizer,
                      "train_every": cfg.train_every},
            "model": model, "esamp": esamp, "share": share}


def _name(hidden: int, layers: int, vocab: int, intermediate: int, kv_dim: int) -> str:
    shape = dict(hidden=hidden, layers=layers, vocab=vocab, intermediate=intermediate, kv_dim=kv_dim)
    return next((name for name, known in MODELS.items() if known == shape), f"D {hidden}, L {layers}, V {vocab}")


def table(results: list[dict]) -> str:
    lines = ["| model | distiller (optimizer, train every) | groups x n | model step GB | ESamp GB (predict / tilt / train) | "
             "bytes share | model step TFLOP | ESamp GFLOP | FLOP share | H100 roofline: model / ESamp ms | time share | "
             "ESamp kernels (eager) |",
             "| --- " * 12 + "|"]
    for r in results:
        s, m, e = r["shape"], r["model"], r["esamp"]
        split = " / ".join(f"{e['parts'][k]['bytes'] / 1e9:.2f}" for k in ("predict", "tilt", "train"))
        lines.append(f"| {s['model']} | {s['distiller']} ({s['optimizer']}, {s['train_every']}) | {s['groups']}x{s['n']} | "
                     f"{m['bytes'] / 1e9:.1f} | {e['bytes'] / 1e9:.2f} ({split}) | "
                     f"{r['share']['bytes']:.1%} | {m['flops'] / 1e12:.2f} | {e['flops'] / 1e9:.1f} | {r['share']['flops']:.2%} | "
                     f"{m['seconds'] * 1e3:.2f} / {e['seconds'] * 1e3:.3f} | {r['share']['seconds']:.2%} | {e['launches']:.0f} |")
    return "\n".join(lines)
