"""ESampConfig: every knob of the method, validated in one place.

Each field maps one to one onto a server flag ``--esamp-<field-with-dashes>`` (the runtime
builds its argparse group from this dataclass), so a value that is valid here is valid on
the command line and the other way round.

Usage::

    from sglang_esamp import ESampConfig
    cfg = ESampConfig(distiller="lowrank", max_groups=16)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .tilt import MODES as TILT_MODES

DISTILLER_KINDS = ("mlp", "lowrank")
INIT_KINDS = ("random", "calibrated", "prompt", "calibrated+prompt")
TRAINER_MODES = ("auto", "thread", "inline")
GROUP_BY = ("request", "prompt")
STOP_CAPS = ("logit", "probability")


@dataclass(slots=True)
class ESampConfig:
    source_layer: int = 0  # distiller input: the output of this decoder layer (0 = the first)
    distiller: str = "mlp"  # "mlp": two residual SwiGLU blocks; "lowrank": rank-r gated residual
    intermediate: int = 384  # SwiGLU width of the "mlp" distiller (the paper's value)
    rank: int = 64  # rank of the "lowrank" distiller
    lr: float = 4e-4
    adam_eps: float = 1e-4
    grad_clip: float = 0.5  # global-norm clip, per group
    max_groups: int = 32  # distiller slots; memory is bounded by this (15 MiB each on SmolLM2)
    max_explore: float = 4.0  # largest beta a request may ask for
    staleness: int = 1  # prediction may miss at most this many of the latest training steps
    init: str = "calibrated"  # "random": the paper's; "calibrated": a copy of a per-model base distiller; "+prompt"/"prompt": then fit on the prompt
    prompt_steps: int = 4  # optimizer steps on a new group's prompt rows, for the inits with "prompt"
    tilt: str = "residual"  # "paper": (1+b) l - b l_dist; "residual": l - b * (l_dist minus its fit on l)
    stop_cap: str = "probability"  # "logit": no stop id's logit rises; "probability": nor does the stop ids' total probability
    plausibility: float = 0.0  # guard for rows without filters: tilt only tokens with p >= this * p_max (0: off)
    trainer: str = "auto"  # "thread": background worker; "inline": right after sampling; "auto": thread on CUDA, inline on CPU
    group_ttl: float = 30.0  # seconds an idle group keeps its distiller before the slot is freed
    group_by: str = "request"  # without explore_group: "request" (its n samples) or "prompt" (same prompt)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int(self, "source_layer", low=0)
        _check_choice(self, "distiller", DISTILLER_KINDS)
        _check_int(self, "intermediate", low=1)
        _check_int(self, "rank", low=1)
        _check_float(self, "lr", low=0.0, low_open=True)
        _check_float(self, "adam_eps", low=0.0, low_open=True)
        _check_float(self, "grad_clip", low=0.0, low_open=True)
        _check_int(self, "max_groups", low=1)
        _check_float(self, "max_explore", low=0.0)
        _check_int(self, "staleness", low=0)
        _check_choice(self, "init", INIT_KINDS)
        _check_int(self, "prompt_steps", low=1)
        _check_choice(self, "tilt", TILT_MODES)
        _check_choice(self, "stop_cap", STOP_CAPS)
        _check_float(self, "plausibility", low=0.0)
        if self.plausibility >= 1.0:
            raise ValueError(f"ESampConfig.plausibility must be < 1, got {self.plausibility}")
        _check_choice(self, "trainer", TRAINER_MODES)
        _check_float(self, "group_ttl", low=0.0)
        _check_choice(self, "group_by", GROUP_BY)
        _check_int(self, "seed", low=0)

    @property
    def calibrated(self) -> bool:
        """New groups start from the per-model base distiller."""
        return self.init.startswith("calibrated")

    @property
    def prompt_fit(self) -> bool:
        """New groups train on their prompt's rows before their first decode step."""
        return self.init.endswith("prompt")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _check_int(cfg: ESampConfig, name: str, low: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"ESampConfig.{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"ESampConfig.{name} must be >= {low}, got {value}")


def _check_float(cfg: ESampConfig, name: str, low: float, low_open: bool = False) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"ESampConfig.{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"ESampConfig.{name} must be {bound}, got {value}")
    setattr(cfg, name, float(value))


def _check_choice(cfg: ESampConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ValueError(f"ESampConfig.{name} must be one of {', '.join(choices)}; got {value!r}")
