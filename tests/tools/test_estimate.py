"""``sglang-esamp bench --estimate``: ESamp's bytes and FLOPs per decode step, counted from its
own code on meta tensors, against the model's step for the same shape."""

import json

import pytest

from sglang_esamp.core.distiller import build_architecture
from sglang_esamp.tools.estimate import estimate, model_step

from ..evaluation.test_commands import cli

LLAMA2_7B = dict(hidden=4096, layers=32, vocab=32000)


def test_the_model_step_counts_a_llama_2_7b():
    step = model_step(intermediate=11008, kv_dim=4096, rows=1, context=128, **LLAMA2_7B)
    assert abs(step["weights"] - 6.74e9) < 0.01e9  # Llama-2-7B's parameter count
    assert step["bytes"] == 2 * (step["weights"] + 32 * 2 * 4096 * 128)  # bf16 weights and one row's KV cache
    assert step["flops"] == 2 * step["weights"] + 4 * 32 * 4096 * 128


@pytest.mark.parametrize("distiller", ["mlp", "lowrank"])
def test_esamp_step_counts_its_matmuls_and_the_banks_rows(distiller):
    groups, n = 8, 16
    rows, d, v = groups * n, LLAMA2_7B["hidden"], LLAMA2_7B["vocab"]
    est = estimate(groups=groups, n=n, distiller=distiller, optimizer="adam", **LLAMA2_7B)
    parts = est["esamp"]["parts"]
    arch = build_architecture(distiller, d, 384, 64)
    matrix = sum(a * b for shape in arch.shapes().values() if len(shape) == 2 for a, b in [shape])  # per group
    # prediction: one (R, D) pass through each group's matrices; training: that forward, the weights'
    # gradients (as much again) and the inputs' gradients where an input depends on the weights (less)
    forward = 2 * rows * matrix
    assert parts["predict"]["flops"] == forward
    assert 2 * forward < parts["train"]["flops"] < 3 * forward
    # the dense tilt: one (rows, D) x (D, V) head product, plus the residual's D x D fit
    assert 2 * rows * d * v <= parts["tilt"]["flops"] <= 2 * rows * d * v + 4 * rows * d * d
    # the step reads every group's weights at least once and updates weights and both moments
    weights = groups * est["esamp"]["bytes_per_group"] // 3
    assert parts["predict"]["bytes"] >= weights and parts["train"]["bytes"] >= 6 * weights
    assert est["share"]["bytes"] == pytest.approx(est["esamp"]["bytes"] / est["model"]["bytes"])


def test_the_estimate_ranks_shapes_as_the_h100_measured_them():
    """H100 (docs/results/speed.md, Adam): mlp at 32 x 16 the worst, lowrank the cheapest."""
    share = {(d, g): estimate(groups=g, n=16, distiller=d, optimizer="adam", **LLAMA2_7B)["share"]["bytes"]
             for d in ("mlp", "lowrank") for g in (8, 32)}
    assert max(share, key=share.get) == ("mlp", 32)
    assert max(share[("lowrank", 8)], share[("lowrank", 32)]) < min(share[("mlp", 8)], share[("mlp", 32)])


def test_rarer_steps_and_sgd_cut_the_weight_traffic_not_the_per_row_work():
    """train_every k: the optimizer's pass over the weights once per k decode steps, the rows'
    forward and backward as before; SGD: no moments to read and write."""
    train = {(k, opt): estimate(groups=32, n=16, distiller="mlp", train_every=k, optimizer=opt, **LLAMA2_7B)["esamp"]["parts"]["train"]
             for k in (1, 4) for opt in ("adam", "sgd")}
    assert train[(4, "adam")]["flops"] == pytest.approx(train[(1, "adam")]["flops"], rel=0.01)
    assert train[(4, "adam")]["bytes"] < 0.5 * train[(1, "adam")]["bytes"]
    assert train[(1, "sgd")]["bytes"] < 0.6 * train[(1, "adam")]["bytes"]
    assert train[(4, "sgd")]["bytes"] < train[(4, "adam")]["bytes"] < train[(1, "adam")]["bytes"]


def test_bench_estimate_prints_json_without_a_server():
    proc = cli("bench", "--estimate", "--hidden", "1024", "--layers", "4", "--vocab", "1000", "--groups", "2", "--n", "3",
               "--distiller", "lowrank", "--train-every", "2", "--json")
    (result,) = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"]["groups"] == 2 and result["shape"]["distiller"] == "lowrank" and result["shape"]["train_every"] == 2
    assert 0 < result["share"]["bytes"] and 0 < result["share"]["flops"]
    bad = cli("bench", "--estimate", "--distiller", "conv", check=False)
    assert bad.returncode != 0 and "distiller must be one of mlp, lowrank" in bad.stderr
