"""ESamp's device memory: what the KV-cache budget gives up is what the runtime then holds,
and a bank that cannot fit is refused at start, naming the flag; on the same server (Adam),
a training step every second decode step (``--esamp-train-every 2``)."""
import json
import re

import pytest
import torch

from sglang_esamp.core import ESampConfig, Head
from sglang_esamp.runtime.footprint import held_bytes, reserved_bytes
from sglang_esamp.runtime.runtime import ESampRuntime

D, V = 32, 500


REQUESTS = 2 * 65536 * 4 + 2 * 65536 * 8  # per tracked request: novelty sum and count (4 bytes each), code and spent bits (8 each)
STATS = 8 * 8  # per slot: 8 float64 counters
RESERVOIR = 8192 * 2 * D * 2  # the base's rows: 8192 (shallow, deep) pairs in bfloat16


def base(params: int) -> int:
    """The base's weights and Adam moments, its reservoir, its last error, and the bank's copy."""
    return 3 * params * 4 + RESERVOIR + 4 + params * 4


MLP_16 = D + 2 * 3 * D * 16  # out_gain, and two blocks of gate, up (D, 16) and down (16, D)
LOWRANK_4 = 3 * D * 4 + 4 + D  # a, gate, b; gate_bias; out_gain
MLP_384 = D + 2 * 3 * D * 384


@pytest.mark.parametrize("cfg, expected", [
    (ESampConfig(distiller="mlp", max_groups=3, intermediate=16),  # mlp, residual tilt, calibrated init
     {"bank": 3 * (MLP_16 * 4 + 4), "stats": 3 * STATS, "requests": REQUESTS, "head moments": D * D * 2 + 2 * D * 4,
      "base": base(MLP_16)}),
    (ESampConfig(max_groups=5, distiller="lowrank", rank=4, init="random", tilt="paper"),
     {"bank": 5 * (LOWRANK_4 * 4 + 4), "stats": 5 * STATS, "requests": REQUESTS}),
    (ESampConfig(distiller="mlp", max_groups=2, init="calibrated+prompt", tilt="paper"),
     {"bank": 2 * (MLP_384 * 4 + 4), "stats": 2 * STATS, "requests": REQUESTS, "base": base(MLP_384)}),
])
def test_the_reservation_is_what_the_runtime_holds(cfg, expected):
    """Counted by hand from the tensors' shapes: the reservation, the runtime's tensors and
    what the server reports all come to it."""
    rt = ESampRuntime(cfg, D, Head(torch.randn(V, D, dtype=torch.bfloat16)), None, "cpu", dtype=torch.bfloat16)  # a bf16 model
    if rt.warm is not None:
        rt.bank.set_base(rt.warm.snapshot())  # the bank's copy of the base, once published
    assert reserved_bytes(cfg, D, torch.bfloat16) == expected
    assert held_bytes(rt) == expected
    assert rt.server_stats()["device_bytes"] == expected


@pytest.mark.parametrize("optimizer, mib", [("sgd", 36), ("adam", 108)])
def test_the_bank_dominates_and_scales_with_the_slots(optimizer, mib):
    one, many = (sum(reserved_bytes(ESampConfig(distiller="mlp", max_groups=g, optimizer=optimizer), 4096, torch.bfloat16).values())
                 for g in (1, 33))
    assert (many - one) / 32 == pytest.approx(mib * 2**20, rel=0.02)  # docs/server.md: per group at hidden size 4096


def reservation(log: str) -> tuple[float, float, float]:
    """(reserved, budget before, budget after) in MiB, from the server's start-up log."""
    m = re.search(r"ESamp reserves ([\d.]+) MiB on the device \(.*\): KV-cache budget ([\d.]+) MiB -> ([\d.]+) MiB", log)
    assert m, log[-3000:]
    return tuple(float(x) for x in m.groups())


GROUPS = 256  # about 450 MiB of distillers (weights and Adam's moments) on the tiny model


@pytest.fixture(scope="module")
def adam_server(tiny_model):
    """Adam, many slots, and a training step every second decode step (the last does not change
    what is held)."""
    from sglang_esamp.launch.server import ServerProcess

    args = ["--model-path", str(tiny_model), "--enable-esamp", "--esamp-max-groups", str(GROUPS), "--esamp-optimizer", "adam",
            "--esamp-train-every", "2", "--esamp-group-ttl", "0"]
    with ServerProcess(args) as srv:
        yield srv


@pytest.mark.server
def test_the_kv_budget_gives_up_what_esamp_holds(adam_server):
    from ..client import esamp_stats

    reserved, before, after = reservation(adam_server.tail(200_000))
    held = esamp_stats(adam_server)["device_bytes"]
    expected = reserved_bytes(ESampConfig(distiller="mlp", max_groups=GROUPS, optimizer="adam"), 64, torch.float32)
    assert held.keys() == expected.keys() and held["bank"] == expected["bank"] > 400 * 2**20
    base_copy = (expected["bank"] // GROUPS - 4) // 3  # the bank's copy of the base, made at its first fit
    scratch = 64 * 2**20  # one block of gathered head rows (core/head.py), reserved besides what is held
    assert reserved == pytest.approx((sum(held.values()) + base_copy + scratch) / 2**20, abs=0.05)
    assert before - after == pytest.approx(reserved, abs=0.15)  # three numbers, each rounded to 0.1 MiB


@pytest.mark.server
def test_a_group_trains_every_second_decode_step_with_adam(adam_server, tiny_model):
    """--esamp-train-every 2 with Adam: a training step every second decode step, the groups'
    moments held and counted."""
    from ..client import esamp_stats, generate_ok

    before = esamp_stats(adam_server)
    assert before["config"]["train_every"] == 2 and before["config"]["optimizer"] == "adam"
    hidden = json.loads((tiny_model / "config.json").read_text())["hidden_size"]
    weights = 2 * 3 * hidden * 384 + hidden  # two SwiGLU blocks of width 384, and the output gain
    assert before["bytes_per_group"] == 3 * weights * 4 + 4  # float32 weights and Adam's two moments, and a step count
    outs = generate_ok(adam_server, "Once upon a time", n=2, temperature=1.0, max_new_tokens=17, ignore_eos=True,
                       explore=0.5)
    metas = [o["meta_info"]["esamp"] for o in outs]
    assert len({m["slot"] for m in metas}) == 1
    # 16 decode steps (the first token comes from the prefill): 8 steps, the metadata trailing by at most one
    assert all(m["steps"] in (7, 8) for m in metas), metas
    after = esamp_stats(adam_server)
    assert after["steps_submitted"] - before["steps_submitted"] == 8
    assert after["trainer_failures"] == 0 and after["tilted_rows"]["plausible"] > 0


@pytest.mark.server
def test_a_bank_larger_than_the_kv_budget_is_refused_at_start(tiny_model):
    from sglang_esamp.launch.server import ServerProcess

    with pytest.raises(RuntimeError, match="lower --esamp-max-groups"):
        with ServerProcess(["--model-path", str(tiny_model), "--enable-esamp", "--esamp-max-groups", "100000000"], timeout=300):
            pass


@pytest.mark.parametrize("vocab, tp, rows", [
    (49152, 2, 49152),  # a multiple of 64, split evenly
    (50257, 2, 50304),  # padded to 64: 786 x 64, even
    (50257, 5, 50560),  # 50304 does not split five ways: padded to 320, 158 x 320
])
def test_under_tp_the_gathered_head_is_reserved_as_sglang_pads_it(vocab, tp, rows):
    parts = reserved_bytes(ESampConfig(distiller="mlp", init="random"), 4096, torch.bfloat16, tp_size=tp, vocab=vocab)
    assert parts["gathered head"] == rows * 4096 * 2 + rows * 2  # the padded weight, and room for a bias
