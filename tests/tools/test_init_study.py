"""``sglang-esamp init-study``: the offline replay of a group's distiller for each init."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sglang_esamp.core import BatchLayout, DistillerBank, ESampConfig
from sglang_esamp.tools.init_study import parse_variants, replay, summarize, table

from ..commands import cli

ROOT = Path(__file__).resolve().parents[2]
D = 8


def rel(tgt, pred):
    return float((tgt - pred).pow(2).sum() / tgt.pow(2).sum())


def test_replay_measures_before_each_update_and_drops_finished_samples():
    torch.manual_seed(0)
    prompt_len = 4
    states = [(torch.randn(t, D), torch.randn(t, D)) for t in (7, 6)]  # two samples: 3 and 2 decode rows
    cfg = ESampConfig(intermediate=8, init="prompt", prompt_steps=2, max_groups=1)
    errors = replay(cfg, D, None, states, prompt_len)
    assert len(errors) == 3

    bank = DistillerBank(replace(cfg, max_groups=1), D)  # the same seed: the same random start
    prompt = BatchLayout.from_slots([0] * (prompt_len - 1))
    for _ in range(2):  # the prompt's rows without its first token
        bank.train_step(prompt, states[0][0][1:prompt_len], states[0][1][1:prompt_len])
    for t, rows in enumerate((2, 2, 1)):
        src = torch.stack([s[prompt_len + t] for s, _ in states[:rows]])
        tgt = torch.stack([h[prompt_len + t] for _, h in states[:rows]])
        layout = BatchLayout.from_slots([0] * rows)
        assert abs(errors[t] - rel(tgt, bank.predict(layout, src))) < 1e-6
        bank.train_step(layout, src, tgt)

    plain = replay(replace(cfg, init="random"), D, None, states, prompt_len)
    assert plain[0] != errors[0]  # the prompt fit changed the first prediction


def test_a_train_every_variant_predicts_from_weights_updated_every_k_steps():
    torch.manual_seed(1)
    states = [(torch.randn(9, D), torch.randn(9, D)) for _ in range(2)]  # 8 decode rows each after a 1-token prompt
    cfg = ESampConfig(intermediate=8, init="random", max_groups=1)
    every = replay(replace(cfg, train_every=4), D, None, states, 1)
    plain = replay(cfg, D, None, states, 1)
    frozen = replay(replace(cfg, sgd_lr=1e-30), D, None, states, 1)  # no learning at all
    assert every[:4] == frozen[:4] and every[4] != frozen[4]  # the first step lands after four decode steps
    assert plain[1] != frozen[1]


def test_variants_parse_typed_and_refuse_unknown_fields():
    assert parse_variants("train_every=2; optimizer=sgd,sgd_lr=1") == {"train_every=2": {"train_every": 2},
                                                                     "optimizer=sgd,sgd_lr=1": {"optimizer": "sgd", "sgd_lr": 1.0}}
    for bad in ("speed=3", "train_every"):
        with pytest.raises(ValueError, match="--vary"):
            parse_variants(bad)


def test_summarize_windows():
    out = summarize([[1.0] * 8 + [0.5] * 24 + [0.25] * 4, [3.0] * 4])
    assert out == {"steps 0-7": (8 * 1.0 + 4 * 3.0) / 12, "steps 8-31": 0.5, "steps 32-end": 0.25}


def test_the_table_pairs_each_variant_with_the_first_over_64_steps():
    """Group means over the first 64 steps only (the 65th step is far off and must not count);
    the difference of identical groups is exact, and a constant shift comes back as itself."""
    base = [[0.5] * 64 + [100.0], [0.3] * 10]
    shifted = [[0.6] * 64 + [0.0], [0.4] * 10]
    result = {"inits": {name: {"rel_err": summarize(c), "curves": c} for name, c in (("mlp", base), ("tail", shifted))}}
    lines = table(result).splitlines()
    assert lines[0].endswith("| mean of steps 0-63 | paired difference to `mlp` |")
    assert lines[2].endswith("| 0.400 | - |")
    assert lines[3].endswith("| 0.500 | +0.100 [+0.100, +0.100] |")


def test_init_study_command_on_the_tiny_model(tiny_model, tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run(
        [sys.executable, "-m", "sglang_esamp.cli", "init-study", "--model-path", str(tiny_model), "--task", "svamp",
         "--limit", "2", "--n", "2", "--max-new-tokens", "5", "--inits", "random,prompt", "--prompt-steps", "1,3", "--out", str(out),
         "--esamp-intermediate", "16"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| random |" in proc.stdout and "| prompt x1 |" in proc.stdout and "| prompt x3 |" in proc.stdout
    result = json.loads((out / "results.json").read_text())
    assert result["problems"] == 2 and result["config"]["intermediate"] == 16
    assert list(result["inits"]) == ["random", "prompt x1", "prompt x3"]
    for init in result["inits"]:
        curves = result["inits"][init]["curves"]
        assert len(curves) == 2 and all(1 <= len(c) <= 5 and all(e >= 0 for e in c) for c in curves)
    assert [len(c) for c in result["inits"]["random"]["curves"]] == [len(c) for c in result["inits"]["prompt x3"]["curves"]]
    assert (out / "rel_err.png").stat().st_size > 0
    cli("init-study", "--model-path", str(tiny_model), "--task", "svamp", "--limit", "1", "--n", "2", "--max-new-tokens", "5",
        "--inits", "random", "--vary", "train_every=1;optimizer=sgd,sgd_lr=0.1", "--out", str(out), "--esamp-intermediate", "16")
    result = json.loads((out / "results.json").read_text())
    assert list(result["inits"]) == ["train_every=1", "optimizer=sgd,sgd_lr=0.1"]
    assert result["variants"]["optimizer=sgd,sgd_lr=0.1"]["optimizer"] == "sgd"
    bad = cli("init-study", "--inits", "magic", check=False)
    assert bad.returncode != 0 and "unknown init 'magic'" in bad.stderr
