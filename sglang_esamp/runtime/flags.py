"""Server flags: ``--enable-esamp`` and one ``--esamp-<field>`` per ESampConfig field.

Every flag, its help and its choices come from the field's declaration in
``core/config.py``; ``markdown_table()`` renders the same declarations as the flag table of
docs/server.md (a test keeps the two equal; ``python -m sglang_esamp.runtime.flags`` prints
it).

SGLang's ServerArgs is a sealed msgspec struct, so the flags are added to its argparse
parser (for ``--help`` and parsing) and their values travel to the scheduler process in
the ``SGLANG_ESAMP_CONFIG`` environment variable, which child processes inherit. Unset
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
import os

from ..core.config import ESampConfig, kind_of

ENV = "SGLANG_ESAMP_CONFIG"
ENABLE_HELP = "Enable exploratory sampling (per-request 'explore')."


def flag_name(field: str) -> str:
    return "--esamp-" + field.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, enable_flag: bool = True) -> None:
    group = parser.add_argument_group("ESamp (exploratory sampling)")
    if enable_flag:
        group.add_argument("--enable-esamp", action="store_true", help=ENABLE_HELP)
    for f in dataclasses.fields(ESampConfig):
        spec = f.metadata["knob"]
        group.add_argument(
            flag_name(f.name), dest="esamp_" + f.name, type=kind_of(f), default=f.default,
            choices=spec.choices, help=f"{spec.help} Default: {f.default}.",
        )


def markdown_table() -> str:
    """The flag table of docs/server.md, from the same declarations as ``--help``."""
    lines = ["| Flag | Default | Meaning |", "| --- | --- | --- |", f"| `--enable-esamp` | off | {ENABLE_HELP} |"]
    for f in dataclasses.fields(ESampConfig):
        lines.append(f"| `{flag_name(f.name)}` | {f.default} | {f.metadata['knob'].help} |")
    return "\n".join(lines)


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


def check_server_args(server_args, cfg: ESampConfig | None) -> None:
    """Refuse, at start, the SGLang features ESamp cannot run with."""
    if cfg is None:
        return
    spec = getattr(server_args, "speculative_algorithm", None)
    if spec:
        raise ValueError(f"--enable-esamp cannot run with speculative decoding (--speculative-algorithm {spec}): the draft "
                         "model captures the same hidden layers that ESamp reads, and its tokens would bypass the tilt")
    if (getattr(server_args, "pp_size", 1) or 1) > 1:
        raise ValueError("--enable-esamp does not support pipeline parallelism (--pp-size > 1): the distiller needs the "
                         "first layer's output and the LM head's input in one process")


def sync_tp_tokens(tp_size: int, cfg: ESampConfig | None) -> None:
    """Tensor parallel with ESamp: every rank tilts with its own copy of the distillers, so
    have SGLang's sampler give every rank the same token (``SYNC_TOKEN_IDS_ACROSS_TP``, its
    own switch, read when a scheduler starts), whatever numeric difference arises."""
    if cfg is not None and (tp_size or 1) > 1:
        os.environ.setdefault("SYNC_TOKEN_IDS_ACROSS_TP", "1")


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


if __name__ == "__main__":
    print(markdown_table())
