"""ESampConfig: every knob of the method, declared and validated in one place.

Each field is declared once, with its type (the annotation), its default, its help text and
its valid range or choices (``knob``). The server flags (``--esamp-<field-with-dashes>``), their ``--help`` and
the flag table in docs/server.md are all generated from these declarations, so a value that
is valid here is valid on the command line and the other way round.

Usage::

    from sglang_esamp import ESampConfig
    cfg = ESampConfig(distiller="lowrank", max_groups=16)
    ESampConfig.knobs()["max_groups"].help
"""

from __future__ import annotations

import math
import re
from dataclasses import Field, dataclass, field, fields

from .stop_cap import CAPS as STOP_CAPS
from .tilt import CENTER_RULES, ENTROPY_RULES
from .tilt import MODES as TILT_MODES

DISTILLER_KINDS = ("mlp", "lowrank", "adapter", "tail")
INIT_KINDS = ("random", "calibrated", "prompt", "calibrated+prompt")
TRAINER_MODES = ("auto", "thread", "inline")
OPTIMIZERS = ("adam", "sgd")
GROUP_BY = ("request", "prompt")
NAMED_GROUPS = ("allow", "deny")


@dataclass(frozen=True)
class Knob:
    """What a field accepts, and the text that describes it (``--help`` and docs)."""

    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None  # smallest valid value
    low_open: bool = False  # ``low`` itself is invalid
    below: float | None = None  # every valid value is strictly below this
    pattern: str | None = None  # a string field's values match this regular expression


def knob(default, help: str, **limits):
    return field(default=default, metadata={"knob": Knob(help, **limits)})


KINDS = {"int": int, "float": float, "str": str}  # the annotations a knob may carry


def kind_of(f: Field) -> type:
    """A knob's type, from its annotation (a string under ``from __future__ import annotations``)."""
    return KINDS[getattr(f.type, "__name__", f.type)]


@dataclass(slots=True)
class ESampConfig:
    source_layer: int = knob(0, "Decoder layer whose output feeds the distiller (0 = the first).", low=0)
    distiller: str = knob(
        "mlp", "Distiller architecture: 'mlp' (the paper's two residual SwiGLU blocks, a full copy per group), 'tail' (one "
        "shared, frozen 'mlp' base that the server trains, with a per-group delta on its last down projection: a twelfth "
        "of an 'mlp' per group), 'lowrank' (rank-r gated residual, cheaper) or 'adapter' (a rank-r gated block per group "
        "on the shared base).", choices=DISTILLER_KINDS)
    intermediate: int = knob(384, "SwiGLU width of the 'mlp' distiller and of the shared base of 'tail' and 'adapter' "
                                   "(the paper's value).", low=1)
    rank: int = knob(64, "Rank of the 'lowrank' distiller and of the 'adapter' distiller's per-group block.", low=1)
    tail_units: int = knob(0, "Intermediate units of the base's last block whose down projection a 'tail' group owns a "
                           "delta of: 0 for half of --esamp-intermediate, else at most --esamp-intermediate.", low=0)
    optimizer: str = knob(
        "sgd", "The groups' optimizer: 'sgd' (plain SGD on the clipped gradient; no moments, so a third of the bank's "
        "memory and of its weight traffic per step, and from the calibrated base it predicts better) or 'adam' (the "
        "paper's).", choices=OPTIMIZERS)
    lr: float = knob(4e-4, "Learning rate of the groups' Adam.", low=0.0, low_open=True)
    sgd_lr: float = knob(0.3, "Learning rate of the groups' SGD (--esamp-optimizer sgd).", low=0.0, low_open=True)
    adam_eps: float = knob(1e-4, "Adam epsilon.", low=0.0, low_open=True)
    grad_clip: float = knob(0.5, "Global gradient-norm clip, per group.", low=0.0, low_open=True)
    max_groups: int = knob(32, "Distiller slots: groups exploring at once. Memory is max_groups times the per-group size.", low=1)
    max_explore: float = knob(4.0, "Largest explore (beta) a request may ask for.", low=0.0)
    staleness: int = knob(1, "Training steps a prediction may lag behind.", low=0)
    train_every: int = knob(
        1, "Decode steps whose rows one training step takes together. 1: a step per decode step (the paper's); k > 1: the "
        "optimizer runs 1/k as often, on k steps' rows, so its weight traffic per decode step falls k-fold and the "
        "distiller learns later.", low=1)
    init: str = knob(
        "calibrated",
        "A new group's distiller: 'random' (the paper's), 'calibrated' (a copy of the base distiller the server trains on "
        "its own decode rows in idle time and saves per model; random until it has one; sglang-esamp calibrate warms it), "
        "or either followed by a fit on the group's prompt: 'prompt' (random, then the prompt), 'calibrated+prompt'.",
        choices=INIT_KINDS)
    prompt_steps: int = knob(4, "Optimizer steps on a new group's prompt rows during its prefill, for the inits with 'prompt'.", low=1)
    tilt: str = knob(
        "residual",
        "'paper': (1+beta)·logit - beta·logit_of_prediction; 'residual': logit - beta·r, with r the prediction's logits minus "
        "their affine fit on the model's own (no implicit temperature change).",
        choices=TILT_MODES)
    stop_cap: str = knob(
        "hold",
        "What the tilt may not change for the model's end-of-sequence ids, at the request's temperature: 'probability' "
        "(may not raise their total probability), 'logit' (nor each one's odds against the other tokens) or 'hold' (their "
        "total probability stays exactly the untilted one, up or down: when to stop stays the model's decision; the "
        "plausible and candidate forms leave them out of the tokens they tilt, so each keeps its plain probability).",
        choices=STOP_CAPS)
    tail_floor: float = knob(
        0.05,
        "For requests without top-k/top-p/min-p: the tilt acts only among the plausible tokens, those whose untilted "
        "probability is at least this fraction of the top token's (at most the 64 likeliest), and keeps their total "
        "probability; every other token keeps exactly its plain-sampling probability, so exploration never pushes a "
        "sample into token soup (0: the tilt acts on every token, as published). Unlike --esamp-plausibility, nothing "
        "is cut.",
        low=0.0, below=1.0)
    tilt_entropy: str = knob(
        "free", "For the plausible form (--esamp-tail-floor > 0): 'keep' rescales each row's tilted plausible tokens to "
        "their untilted entropy, so the tilt moves probability among them without sharpening the row (the row's whole "
        "distribution keeps plain sampling's entropy); 'local' removes from the tilt its least-squares component along the "
        "row's own plausible logits (weighted by probability), so it moves probability among them without sharpening or "
        "flattening them to first order; 'free': the tilt as it comes.", choices=ENTROPY_RULES)
    tilt_max_gain: float = knob(
        5.0, "For the plausible form (--esamp-tail-floor > 0): the most the tilt may multiply any one token's probability "
        "by, each step; a token the tilt would raise further is held at that bound and the others keep their relative "
        "odds, so no word piece the model finds unlikely is handed most of a step's probability. Must be above 1; 0: no "
        "bound (as published).", low=0.0)
    tilt_center: str = knob(
        "group", "'group': before tilting, shift each sample's prediction by its group's mean prediction error at this step "
        "(over the group's running samples, when there are at least two), so the tilt acts on what sets a sample apart "
        "from its siblings and not on an error they all share (samples that share a state are then untilted); 'none': "
        "the prediction as it comes.", choices=CENTER_RULES)
    shared_prefix_tilt: str = knob(
        "on", "'off': a sample whose generated tokens so far equal another running sample's of its group is not tilted "
        "until it diverges (such samples share one state, one prediction and one tilt; stratified codes separate them); "
        "'on': every sample is tilted.", choices=("on", "off"))
    plausibility: float = knob(
        0.0,
        "Guard for requests without top-k/top-p/min-p: tilt and sample only tokens whose probability is at least this "
        "fraction of the top token's (0: off). Filtered requests tilt within their filters' candidates.",
        low=0.0, below=1.0)
    trainer: str = knob(
        "auto", "'thread': train in a background worker (a side stream on CUDA); 'inline': right after sampling; "
        "'auto': thread on CUDA, inline on CPU.", choices=TRAINER_MODES)
    group_ttl: float = knob(30.0, "Seconds an idle group keeps its distiller before its slot is freed "
                         "(under tensor parallelism only 0 applies: idle groups otherwise leave when their slot is needed).", low=0.0)
    group_by: str = knob("request", "Grouping of requests without explore_group: 'request' (its n samples) or 'prompt'.",
                         choices=GROUP_BY)
    named_groups: str = knob(
        "allow", "'deny': refuse requests that name an explore_group (HTTP 400), for servers shared by clients who must not "
        "meet in one group; --esamp-group-by prompt is refused with it.", choices=NAMED_GROUPS)
    scope_header: str = knob(
        "", "A request header (set by a trusted gateway) whose value scopes named groups: the same explore_group under two "
        "values is two groups, and a request naming a group without the header is refused. Empty: one namespace.",
        pattern=r"[A-Za-z0-9-]{0,64}")
    seed: int = knob(0, "Seed of the distillers' initialisation.", low=0)

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(self, f.name, kind_of(f), f.metadata["knob"])
        if 0 < self.tilt_max_gain <= 1:
            raise ValueError(f"ESampConfig.tilt_max_gain must be 0 (no bound) or above 1, got {self.tilt_max_gain}")
        if self.tail_units > self.intermediate:
            raise ValueError(f"ESampConfig.tail_units ({self.tail_units}) must be at most intermediate ({self.intermediate})")
        if self.named_groups == "deny" and self.group_by == "prompt":
            raise ValueError("ESampConfig.group_by 'prompt' joins clients who send the same prompt; "
                             "it cannot be used with named_groups 'deny'")

    @property
    def state_copies(self) -> int:
        """Float32 copies of the weights a bank slot holds: the weights, and Adam's two moments."""
        return 3 if self.optimizer == "adam" else 1

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

    @classmethod
    def knobs(cls) -> dict[str, Knob]:
        return {f.name: f.metadata["knob"] for f in fields(cls)}


def _check(cfg: ESampConfig, name: str, kind: type, spec: Knob) -> None:
    value = getattr(cfg, name)
    if spec.choices is not None:
        if value not in spec.choices:
            raise ValueError(f"ESampConfig.{name} must be one of {', '.join(spec.choices)}; got {value!r}")
        return
    if kind is str:
        if not isinstance(value, str) or (spec.pattern is not None and not re.fullmatch(spec.pattern, value)):
            raise ValueError(f"ESampConfig.{name} must be a string matching {spec.pattern}; got {value!r}")
        return
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"ESampConfig.{name} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"ESampConfig.{name} must be a finite number, got {value!r}")
        value = float(value)
        setattr(cfg, name, value)
    if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)):
        raise ValueError(f"ESampConfig.{name} must be {'>' if spec.low_open else '>='} {spec.low}, got {value}")
    if spec.below is not None and value >= spec.below:
        raise ValueError(f"ESampConfig.{name} must be < {spec.below}, got {value}")
