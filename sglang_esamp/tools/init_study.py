"""How well a group's distiller predicts over its first decode steps, for each ``--esamp-init``
or for each training variant (``--vary``: train_every, optimizer, lr, distiller, ...).

Offline, with transformers and the pure-torch core (no server): the model writes n
continuations of each prompt, one forward pass per sample gives every position's shallow
and deep state, and each init is replayed exactly as a server group would see it:

1. a new bank slot: the random init, or a copy of the calibrated base;
2. for the ``prompt`` inits, ``prompt_steps`` training steps on the prompt's rows (all but
   the first token, as the runtime's prompt fit takes them);
3. for each decode step t, the group's n rows (the samples still running): predict, record
   the relative error sum ||h - f(h1)||^2 / sum ||h||^2, then hand the rows to the trainer
   as the server does (with ``train_every`` k, a step every k decode steps).

The error before each step's update is what the tilt of that step used. Sampling is plain
(no tilt), so every init sees the same rows.

Usage::

    sglang-esamp init-study --task svamp --split tune --limit 8 --n 8 --out docs/results/init_study
    sglang-esamp init-study --task creative --inits calibrated --vary "train_every=1;train_every=4;optimizer=sgd,sgd_lr=1"
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..core import AsyncTrainer, BatchLayout, DistillerBank, ESampConfig, GroupStats
from ..core.config import INIT_KINDS
from . import text_states

WINDOWS = ((0, 8), (8, 32), (32, None))  # decode-step ranges reported separately


def replay(cfg: ESampConfig, hidden: int, base, states, prompt_len: int) -> list[float]:
    """Relative error of one group's distiller at each decode step (before that step's update)."""
    bank = DistillerBank(replace(cfg, max_groups=1), hidden, base=base if cfg.calibrated else None)
    trainer = AsyncTrainer(bank, GroupStats(1), staleness=0, mode="inline", every=cfg.train_every)
    if cfg.prompt_fit and prompt_len > 1:
        src, tgt = states[0][0][1:prompt_len], states[0][1][1:prompt_len]  # the shared prompt, without its first token
        layout = BatchLayout.from_slots([0] * src.shape[0])
        trainer.submit(layout, src, tgt, repeat=cfg.prompt_steps)
    errors = []
    for t in range(max(s.shape[0] for s, _ in states) - prompt_len):
        live = [(s[prompt_len + t], h[prompt_len + t]) for s, h in states if s.shape[0] > prompt_len + t]
        src, tgt = torch.stack([x for x, _ in live]), torch.stack([y for _, y in live])  # (rows, D)
        layout = BatchLayout.from_slots([0] * len(live))
        pred = trainer.predict(layout, src)
        errors.append(float((tgt - pred).pow(2).sum() / tgt.pow(2).sum().clamp_min(1e-12)))
        trainer.submit(layout, src, tgt)
    return errors


def parse_variants(text: str) -> dict[str, dict]:
    """"train_every=2;optimizer=sgd,sgd_lr=1" -> {label: config overrides}, each value typed as
    the config field's default."""
    defaults = ESampConfig()
    out = {}
    for spec in filter(None, (part.strip() for part in text.split(";"))):
        changes = {}
        for pair in spec.split(","):
            name, sep, value = (x.strip() for x in pair.partition("="))
            if not sep or name not in ESampConfig.field_names():
                raise ValueError(f"--vary: {pair!r} is not FIELD=VALUE with a field of the ESamp config")
            kind = type(getattr(defaults, name))
            changes[name] = kind(value)
        out[spec] = changes
    return out


def summarize(curves: list[list[float]]) -> dict:
    """Mean relative error per window of decode steps, over every group's steps in it."""
    out = {}
    for lo, hi in WINDOWS:
        vals = [e for c in curves for e in c[lo:hi]]
        out[f"steps {lo}-{hi - 1 if hi else 'end'}"] = sum(vals) / len(vals) if vals else None
    return out


def run(model_path: str, task: str, split: str, limit: int, n: int, max_new_tokens: int, min_p: float,
        inits: list[str], cfg: ESampConfig, out: Path | None, seed: int = 0, prompt_steps: list[int] | None = None,
        vary: dict[str, dict] | None = None) -> dict:
    """Replay every init (each prompt init once per count in ``prompt_steps``, default the
    config's), each with every variant of ``vary`` (label -> config overrides), on the same
    samples."""
    from ..evaluation.client import prompt_ids
    from ..evaluation.tasks import load_task
    from ..lang.prompts import MATH_INSTRUCTION
    from ..runtime.base import BaseStore

    for init in inits:
        if init not in INIT_KINDS:
            raise ValueError(f"unknown init {init!r}; choose from {', '.join(INIT_KINDS)}")
    model, tokenizer = text_states.load(model_path)
    variants = {}  # label -> config
    for init in inits:
        c = replace(cfg, init=init)
        for k in (prompt_steps or [cfg.prompt_steps]) if c.prompt_fit else [None]:
            variants[init if k is None else f"{init} x{k}"] = c if k is None else replace(c, prompt_steps=k)
    if vary:
        variants = {f"{label}, {change}" if len(variants) > 1 else change: replace(c, **overrides)
                    for label, c in variants.items() for change, overrides in vary.items()}
    bases = {}  # label -> the calibrated base of its distiller shape
    for label, c in variants.items():
        if c.calibrated:
            store = BaseStore.for_model(model_path, c, model.config.hidden_size)
            saved = store.load()
            if saved is None:
                raise SystemExit(f"no base distiller saved at {store.path}: run sglang-esamp calibrate on this model "
                                 f"(with --esamp-distiller {c.distiller}) first")
            bases[label] = saved.params
    torch.manual_seed(seed)
    curves = {label: [] for label in variants}
    t0 = time.perf_counter()
    for problem in tqdm(load_task(task, split, limit), desc="init study"):
        ids = prompt_ids(tokenizer, problem, MATH_INSTRUCTION)  # as the eval builds it
        states = text_states.states(model, text_states.sample(model, tokenizer, [ids], n, max_new_tokens, min_p), cfg.source_layer)
        for label, c in variants.items():
            curves[label].append(replay(c, model.config.hidden_size, bases.get(label), states, len(ids)))
    result = {
        "model": model_path, "task": task, "split": split, "problems": len(next(iter(curves.values()))), "n": n,
        "max_new_tokens": max_new_tokens, "min_p": min_p, "config": {k: getattr(cfg, k) for k in ESampConfig.field_names()},
        "seconds": time.perf_counter() - t0,
        "inits": {init: {"rel_err": summarize(c), "curves": c} for init, c in curves.items()},
        "variants": {label: {k: getattr(c, k) for k in ESampConfig.field_names()} for label, c in variants.items()},
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1))
        plot(result, out / "rel_err.png")
    return result


def plot(result: dict, path: Path) -> None:
    """Mean relative error per decode step, one line per init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for init, data in result["inits"].items():
        curves = data["curves"]
        steps = max(map(len, curves))
        mean = [sum(c[t] for c in curves if len(c) > t) / sum(len(c) > t for c in curves) for t in range(steps)]
        ax.plot(range(steps), mean, label=init)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")  # predicting zero
    ax.set_xlabel("decode step")
    ax.set_ylabel("relative error ||h - f(h1)||² / ||h||²")
    ax.set_title(f"{result['task']} ({result['split']}), {result['problems']} prompts x n={result['n']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


FIRST_STEPS = 64  # decode steps of each group's mean error in the paired comparison


def group_means(curves: list[list[float]], steps: int = FIRST_STEPS) -> list[float]:
    """Each group's mean relative error over its first ``steps`` decode steps."""
    return [sum(c[:steps]) / len(c[:steps]) for c in curves]


def table(result: dict) -> str:
    """Mean error per window, each group's mean over its first 64 steps, and each variant's
    paired difference to the first one (a 95% bootstrap interval over prompts)."""
    from ..evaluation.metrics import paired_diff_ci

    windows = list(next(iter(result["inits"].values()))["rel_err"])
    first, *_ = result["inits"]
    reference = group_means(result["inits"][first]["curves"])
    lines = ["| variant | " + " | ".join(windows) + f" | mean of steps 0-{FIRST_STEPS - 1} | paired difference to `{first}` |",
             "| --- |" + " --- |" * (len(windows) + 2)]
    for init, data in result["inits"].items():
        means = group_means(data["curves"])
        diff = "-" if init == first else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*paired_diff_ci(means, reference))
        cells = ["-" if v is None else f"{v:.3f}" for v in data["rel_err"].values()] + [f"{sum(means) / len(means):.3f}", diff]
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
