"""Server flags: ``--enable-esamp`` and one ``--esamp-<field>`` per ESampConfig field.

SGLang's ServerArgs is a sealed msgspec struct, so the flags are added to its argparse
parser (for ``--help`` and parsing) and their values travel to the scheduler process in
the ``SGLANG_ESAMP_CONFIG`` environment variable, which ``spawn`` children inherit. Unset
means ESamp is off.

Usage::

    flags.add_arguments(parser)            # inside ServerArgs.add_cli_args
    flags.export(flags.parse(argv))        # before the scheduler starts
    cfg = flags.current()                  # in any process: ESampConfig or None
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os

from ..core.config import DISTILLER_KINDS, GROUP_BY, INIT_KINDS, STOP_CAPS, TILT_MODES, TRAINER_MODES, ESampConfig

logger = logging.getLogger(__name__)

ENV = "SGLANG_ESAMP_CONFIG"

_HELP = {
    "source_layer": "Decoder layer whose output feeds the distiller (0 = the first).",
    "distiller": "Distiller architecture: 'mlp' (the paper's) or 'lowrank' (cheaper).",
    "intermediate": "SwiGLU width of the 'mlp' distiller.",
    "rank": "Rank of the 'lowrank' distiller.",
    "lr": "Distiller learning rate (Adam).",
    "adam_eps": "Adam epsilon.",
    "grad_clip": "Per-group gradient-norm clip.",
    "max_groups": "Distiller slots: groups exploring at once. Memory is bounded by this.",
    "max_explore": "Largest explore (beta) a request may ask for.",
    "staleness": "Training steps a prediction may lag behind.",
    "init": "Initialisation of a new group's distiller: 'random' (the paper's), 'calibrated' (a copy of a base distiller fitted once per model on its own text and cached; see docs/design.md), or either followed by a fit on the group's prompt: 'prompt' (random, then the prompt), 'calibrated+prompt'.",
    "prompt_steps": "Optimizer steps on a new group's prompt rows, during its prefill, for --esamp-init prompt and calibrated+prompt.",
    "tilt": "'paper': (1+beta)*logit - beta*logit_of_prediction; 'residual': tilt only by the part of the prediction's logits not explained by an affine fit on the model's own (no implicit temperature change).",
    "stop_cap": "What the tilt may not raise for the model's end-of-sequence ids: 'logit' (each one's logit) or 'probability' (also their total probability at the request's temperature; costs a head matmul on 1 in 8 rows of the eager head-input form).",
    "plausibility": "Guard for requests without top-k/top-p/min-p: tilt only tokens whose probability is at least this fraction of the top token's, the rest are not sampled (0: no guard). Filtered requests tilt within their filters' candidates.",
    "trainer": "'thread': train in a background worker; 'inline': right after sampling; 'auto': thread on CUDA, inline on CPU.",
    "group_ttl": "Seconds an idle group keeps its distiller before its slot is freed.",
    "group_by": "Grouping of requests without explore_group: 'request' (its n samples) or 'prompt'.",
    "seed": "Seed of the distillers' initialisation.",
}


_CHOICES = {"distiller": DISTILLER_KINDS, "init": INIT_KINDS, "tilt": TILT_MODES, "trainer": TRAINER_MODES, "group_by": GROUP_BY,
            "stop_cap": STOP_CAPS}


def flag_name(field: str) -> str:
    return "--esamp-" + field.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, enable_flag: bool = True) -> None:
    group = parser.add_argument_group("ESamp (exploratory sampling)")
    if enable_flag:
        group.add_argument("--enable-esamp", action="store_true", help="Enable exploratory sampling (per-request 'explore').")
    for f in dataclasses.fields(ESampConfig):
        group.add_argument(
            flag_name(f.name), dest="esamp_" + f.name, type=type(f.default), default=f.default,
            choices=_CHOICES.get(f.name), help=f"{_HELP[f.name]} Default: {f.default}.",
        )


def parse(argv: list[str]) -> ESampConfig | None:
    """The ESamp config named by these launch_server args, or None when not enabled."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    if not args.enable_esamp:
        set_by_user = [a.split("=")[0] for a in argv if a.startswith("--esamp-")]
        if set_by_user:
            raise ValueError(f"{', '.join(set_by_user)} given without --enable-esamp")
        return None
    return from_namespace(args)


def from_namespace(args: argparse.Namespace) -> ESampConfig:
    """The config held by a namespace that ``add_arguments`` filled."""
    return ESampConfig(**{f.name: getattr(args, "esamp_" + f.name) for f in dataclasses.fields(ESampConfig)})


def export(cfg: ESampConfig | None) -> None:
    """Make ``cfg`` the configuration of this process and of the processes it starts."""
    if cfg is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = json.dumps(dataclasses.asdict(cfg))


def current() -> ESampConfig | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    try:
        return ESampConfig(**json.loads(raw))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid {ENV}: {exc}") from exc
