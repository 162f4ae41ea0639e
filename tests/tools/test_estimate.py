"""``sglang-esamp bench --estimate``: ESamp's bytes and FLOPs per decode step, counted from its
own code on meta tensors, against the model's step for the same shape."""

import json

import pytest
import torch

from sglang_esamp.core.distiller import build_architecture
from sglang_esamp.tools.estimate import MODELS, count, estimate, model_step

from ..evaluation.test_commands import cli

LLAMA2_7B = dict(hidden=4096, layers=32, vocab=32000)


def test_the_model_step_counts_a_llama_2_7b():
    step = model_step(intermediate=11008, kv_dim=4096, rows=1, context=128, **LLAMA2_7B)
    assert abs(step["weights"] - 6.74e9) < 0.01e9  # Llama-2-7B's parameter count
    assert step["bytes"] == 2 * (step["weights"] + 32 * 2 * 4096 * 128)  # bf16 weights and one row's KV cache
    assert step["flops"] == 2 * step["weights"] + 4 * 32 * 4096 * 128


def test_a_decode_step_is_memory_bound_at_one_row_and_its_matmuls_compute_bound_at_many():
    """H100 SXM: 3.35 TB/s, 989 dense bf16 TFLOP/s. One row reads 13.5 GB of weights in 4.0 ms;
    at 4096 rows each weight byte serves 4096 FLOPs, above the ridge of 295, and the matmuls
    take their FLOPs' time."""
    one = model_step(intermediate=11008, kv_dim=4096, rows=1, context=128, **LLAMA2_7B)
    assert one["seconds"] == pytest.approx(one["bytes"] / 3.35e12)
    assert 3.9e-3 < one["seconds"] < 4.2e-3
    many = model_step(intermediate=11008, kv_dim=4096, rows=4096, context=128, **LLAMA2_7B)
    kv = 2 * 4096 * 32 * 2 * 4096 * 128  # bf16 bytes of every row's keys and values
    assert many["seconds"] == pytest.approx(2 * many["weights"] * 4096 / 989e12 + kv / 3.35e12)


def test_ops_are_counted_by_their_kernels_bytes_flops_and_roofline():
    meta = torch.device("meta")
    a, b = torch.empty(64, 4096, device=meta, dtype=torch.bfloat16), torch.empty(4096, 8192, device=meta, dtype=torch.bfloat16)
    mm = count(lambda: a @ b)  # one kernel, memory bound at 64 rows
    assert mm["launches"] == 1 and mm["flops"] == 2 * 64 * 4096 * 8192
    assert mm["bytes"] == 2 * (64 * 4096 + 4096 * 8192 + 64 * 8192) and mm["seconds"] == pytest.approx(mm["bytes"] / 3.35e12)
    big = torch.empty(8192, 4096, device=meta)  # fp32: off the tensor cores at 67 TFLOP/s
    fp32 = count(lambda: big @ big.t())
    assert fp32["seconds"] == pytest.approx(2 * 8192 * 4096 * 8192 / 67e12)
    moves = count(lambda: (a.reshape(-1)[:10], torch.empty(5, device=meta), a.t().contiguous()))
    assert moves["launches"] == 1 and moves["bytes"] == 2 * 2 * 64 * 4096 and moves["flops"] == 0  # views and allocations launch nothing
    rows = torch.empty(7, dtype=torch.int64, device=meta)
    picked = count(lambda: b[rows])  # a gather reads the 7 rows it picks, not the whole (4096, 8192) matrix
    assert picked["bytes"] == 2 * 7 * 8192 * 2 + 7 * 8
    put = count(lambda: b.index_put_((rows,), torch.empty(7, 8192, device=meta, dtype=torch.bfloat16)))
    assert put["bytes"] == 2 * 7 * 8192 * 2 + 7 * 8 and put["launches"] == 1  # writes only the rows it puts


def test_the_step_times_bound_the_bytes_and_flops_of_every_shape():
    for name, shape in MODELS.items():
        est = estimate(groups=8, n=16, **shape)
        e = est["esamp"]
        assert est["shape"]["model"] == name
        assert e["seconds"] >= max(e["bytes"] / 3.35e12, e["flops"] / 989e12) * (1 - 1e-12)  # sums of per-op terms
        assert e["seconds"] <= e["bytes"] / 3.35e12 + e["flops"] / 67e12
        assert est["share"]["seconds"] == pytest.approx(e["seconds"] / est["model"]["seconds"])
        assert e["launches"] == sum(p["launches"] for p in e["parts"].values()) > 50


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
    # the plausible tilt (a row without filters, by default): its 64 likeliest tokens' head rows
    # against one state, and the residual's D x D fit; it reads those bf16 rows and the row's logits
    assert parts["tilt"]["flops"] == 2 * rows * 64 * d + 2 * rows * d * d
    assert parts["tilt"]["bytes"] >= rows * 64 * d * 2 + rows * v * 4
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
    for flags, message in ((["--model", "gpt-5"], "--model must be among llama-2-7b"), (["--groups", "8,x"], "--groups must be comma"),
                           (["--groups", "0"], "--groups must be >= 1")):
        bad = cli("bench", "--estimate", *flags, check=False)
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr


def test_bench_estimate_tables_models_and_group_counts():
    proc = cli("bench", "--estimate", "--model", "llama-2-7b,qwen2.5-7b", "--groups", "8,32", "--distiller", "lowrank")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| llama") or line.startswith("| qwen")]
    assert [row.split(" | ")[0] + " " + row.split(" | ")[2] for row in rows] == ["| llama-2-7b 8x16", "| llama-2-7b 32x16",
                                                                                  "| qwen2.5-7b 8x16", "| qwen2.5-7b 32x16"]
