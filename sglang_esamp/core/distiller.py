"""Distiller architectures, written as pure functions over stacked per-group weights.

A distiller f maps the shallow state h_1 (output of an early decoder layer) to a
prediction of the deep state h_L that feeds the LM head. Every weight tensor carries a
leading group axis g, so one batched call serves g groups at once: inputs arrive packed as
(g, R, D) and every matmul is a bmm.

- ``mlp`` (the paper's default): two residual gated SwiGLU blocks of width ``intermediate``.
- ``lowrank``: one residual gated block of rank ``rank``, about 6x cheaper than ``mlp``.
- ``adapter``: a shared ``mlp`` base, one copy for every group and frozen in the bank (the
  server trains it on its traffic, ``warm_base.py``), with a ``lowrank`` block per group on
  top of the base's residual stream. A group owns 3 D r + r + D parameters (8% of ``mlp``
  at D = 4096, r = 64); the base's matrices run once over every row of every group.
- ``tail``: the same shared, frozen ``mlp`` base, with a per-group delta on the down
  projection of the base's last block, over its first ``units`` intermediate units, and a
  per-group output gain. A group owns (units + 1) D parameters (8% of ``mlp`` at
  ``units`` 192); its gradient needs no backward through the base.

Each architecture names the one its base has (``base_arch``: itself, or the adapter's
``mlp``). The adapter's params carry the shared base under ``base.`` names, (1, ...) each.

Both normalise their input (RMSNorm without gain) and end in an RMSNorm with a learnable
gain, because the target is itself the output of the model's final RMSNorm. A distiller
whose output norm starts at the model's own final-norm gain predicts the target's scale
from the first step; without it the relative error of a fresh distiller stayed above 1.0
for the first ~60 steps on SmolLM2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]  # name -> (g, *shape)

_RMS_EPS = 1e-6


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + _RMS_EPS)


@torch.no_grad()
def norm_gain(norm: torch.nn.Module | None) -> torch.Tensor | None:
    """(D,) the effective per-dimension gain of a model's final norm: its output for a vector
    of ones (whose RMS is 1). That is the weight of a Llama-style norm and 1 + weight of a
    Gemma-style one, which stores its gain as an offset. None without a weight."""
    weight = getattr(norm, "weight", None)
    if weight is None:
        return None
    out = norm(torch.ones(1, weight.shape[-1], dtype=weight.dtype, device=weight.device))
    return (out[0] if isinstance(out, tuple) else out).flatten().float()


class MLPDistiller:
    """x -> x + W_d(silu(W_g n(x)) * W_u n(x)), twice, then RMSNorm * gain."""

    zero_init: tuple[str, ...] = ()

    def __init__(self, hidden: int, intermediate: int):
        self.hidden, self.intermediate = hidden, intermediate

    def shapes(self) -> dict[str, tuple[int, ...]]:
        d, i = self.hidden, self.intermediate
        out = {"out_gain": (d,)}
        for b in range(2):
            out |= {f"b{b}.gate": (d, i), f"b{b}.up": (d, i), f"b{b}.down": (i, d)}
        return out

    @property
    def base_arch(self) -> MLPDistiller:
        return self

    @staticmethod
    def activation(p: Params, b: int, x: torch.Tensor) -> torch.Tensor:
        """(g, R, D) -> (g, R, I): block b's gated activation, the input of its down projection."""
        n = rms_norm(x)
        return F.silu(torch.bmm(n, p[f"b{b}.gate"])) * torch.bmm(n, p[f"b{b}.up"])

    def trunk(self, p: Params, x: torch.Tensor) -> torch.Tensor:
        """The residual stream after both blocks, before the output norm. x: (g, R, D)."""
        for b in range(2):
            x = x + torch.bmm(self.activation(p, b, x), p[f"b{b}.down"])
        return x

    def forward(self, p: Params, x: torch.Tensor) -> torch.Tensor:
        # x: (g, R, D) -> (g, R, D)
        return rms_norm(self.trunk(p, x)) * p["out_gain"].unsqueeze(1)


class LowRankDistiller:
    """x -> RMSNorm(x + ((n(x) A) * silu(n(x) G + b)) B) * gain, with A, G: (D, r), B: (r, D)."""

    def __init__(self, hidden: int, rank: int):
        self.hidden, self.rank = hidden, rank

    def shapes(self) -> dict[str, tuple[int, ...]]:
        d, r = self.hidden, self.rank
        return {"a": (d, r), "gate": (d, r), "gate_bias": (r,), "b": (r, d), "out_gain": (d,)}

    zero_init: tuple[str, ...] = ()

    @property
    def base_arch(self) -> LowRankDistiller:
        return self

    def forward(self, p: Params, x: torch.Tensor, stream: torch.Tensor | None = None) -> torch.Tensor:
        """x: (g, R, D) -> (g, R, D); ``stream``: the (g, R, D) residual stream the block adds
        to (default: x itself)."""
        n = rms_norm(x)
        act = torch.bmm(n, p["a"]) * F.silu(torch.bmm(n, p["gate"]) + p["gate_bias"].unsqueeze(1))  # (g, R, r)
        return rms_norm((x if stream is None else stream) + torch.bmm(act, p["b"])) * p["out_gain"].unsqueeze(1)


class AdapterDistiller(LowRankDistiller):
    """x -> RMSNorm(z + ((n(x) A) * silu(n(x) G + b)) B) * gain, with z the shared base's
    residual stream (``MLPDistiller.trunk``) and x itself while there is no base. B starts at
    zero and the gain at the base's, so a new group predicts exactly what the base does."""

    zero_init = ("b",)

    def __init__(self, hidden: int, intermediate: int, rank: int):
        super().__init__(hidden, rank)
        self._base = MLPDistiller(hidden, intermediate)

    @property
    def base_arch(self) -> MLPDistiller:
        return self._base

    def forward(self, p: Params, x: torch.Tensor) -> torch.Tensor:
        # x: (g, R, D) -> (g, R, D); p: the groups' adapters (g, ...) and maybe the base, "base." (1, ...)
        base = {k[len(BASE):]: v for k, v in p.items() if k.startswith(BASE)}
        if not base:
            return super().forward(p, x)
        g, rows, d = x.shape
        stream = self._base.trunk(base, x.reshape(1, g * rows, d)).reshape(g, rows, d)  # one pass for every group's rows
        return super().forward(p, x, stream)


class TailDistiller:
    """x -> RMSNorm(z + act_u Δ_g) * gain_g: z is the shared base's residual stream
    (``MLPDistiller.trunk``), act_u the first ``units`` units of its last block's SwiGLU
    activation, Δ_g a group's (units, D) delta on that block's down projection. Δ starts at
    zero and the gain at the base's, so a new group predicts exactly what the base does.
    It cannot run without a base: the bank gives it a random one until the server has its own."""

    zero_init = ("down",)
    needs_base = True

    def __init__(self, hidden: int, intermediate: int, units: int):
        if not 1 <= units <= intermediate:
            raise ValueError(f"the tail's units must be in [1, intermediate = {intermediate}], got {units}")
        self.hidden, self.units = hidden, units
        self._base = MLPDistiller(hidden, intermediate)

    @property
    def base_arch(self) -> MLPDistiller:
        return self._base

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"down": (self.units, self.hidden), "out_gain": (self.hidden,)}

    def stream(self, p: Params, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (g, R, D) -> (act_u (g, R, units), z (g, R, D)): the input of the groups' deltas
        and the residual stream before the output norm. p: the deltas (g, ...) and the base."""
        g, rows, d = x.shape
        base = {k[len(BASE):]: v for k, v in p.items() if k.startswith(BASE)}
        x = x.reshape(1, g * rows, d)  # the base runs once over every group's rows
        x = x + torch.bmm(MLPDistiller.activation(base, 0, x), base["b0.down"])
        act = MLPDistiller.activation(base, 1, x)  # (1, gR, I)
        act_u = act[..., : self.units].reshape(g, rows, self.units)
        z = (x + torch.bmm(act, base["b1.down"])).reshape(g, rows, d) + torch.bmm(act_u, p["down"])
        return act_u, z

    def forward(self, p: Params, x: torch.Tensor) -> torch.Tensor:
        # x: (g, R, D) -> (g, R, D)
        return rms_norm(self.stream(p, x)[1]) * p["out_gain"].unsqueeze(1)


BASE = "base."  # the prefix of the shared base's weights among an adapter's params


def build_architecture(kind: str, hidden: int, intermediate: int, rank: int,
                       units: int | None = None) -> MLPDistiller | LowRankDistiller | TailDistiller:
    """``units``: the tail's (default: half the intermediate width)."""
    if kind == "mlp":
        return MLPDistiller(hidden, intermediate)
    if kind == "lowrank":
        return LowRankDistiller(hidden, rank)
    if kind == "adapter":
        return AdapterDistiller(hidden, intermediate, rank)
    if kind == "tail":
        return TailDistiller(hidden, intermediate, max(1, intermediate // 2) if units is None else units)
    raise ValueError(f"unknown distiller kind {kind!r}; expected 'mlp', 'lowrank', 'adapter' or 'tail'")


def random_init(shapes: dict[str, tuple[int, ...]], g: int, generator: torch.Generator, out_gain: torch.Tensor | None,
                zero: tuple[str, ...] = ()) -> Params:
    """The paper's random init: matrices uniform in +-1/sqrt(fan_in) (as nn.Linear does),
    biases and the ``zero`` matrices zero, the output gain at ``out_gain`` (the model's
    final-norm weight) or ones. Made on the generator's device: no host copy when it is the bank's."""
    device = generator.device
    params: Params = {}
    for name, shape in shapes.items():
        if name == "out_gain":
            gain = out_gain.float().to(device) if out_gain is not None else torch.ones(shape, device=device)
            params[name] = gain.expand(g, *shape).clone()
        elif len(shape) == 1 or name in zero:
            params[name] = torch.zeros(g, *shape, device=device)
        else:
            bound = 1.0 / math.sqrt(shape[0])
            params[name] = (torch.rand(g, *shape, generator=generator, device=device) * 2 - 1) * bound
    return params
