"""ESamp's device memory: what the KV-cache budget gives up is what the runtime then holds,
and a bank that cannot fit is refused at start, naming the flag."""

import re

import pytest
import torch

from sglang_esamp.core import ESampConfig, Head
from sglang_esamp.runtime.footprint import held_bytes, reserved_bytes
from sglang_esamp.runtime.runtime import ESampRuntime

D, V = 32, 500


@pytest.mark.parametrize("cfg", [
    ESampConfig(max_groups=3, intermediate=16),  # mlp, residual tilt, calibrated init
    ESampConfig(max_groups=5, distiller="lowrank", rank=4, init="random", tilt="paper"),
    ESampConfig(max_groups=2, init="calibrated+prompt", tilt="paper"),
])
def test_the_reservation_is_what_the_runtime_holds(cfg):
    rt = ESampRuntime(cfg, D, Head(torch.randn(V, D)), None, "cpu", dtype=torch.bfloat16)
    if rt.warm is not None:
        rt.bank.set_base(rt.warm.snapshot())  # the bank's copy of the base, once published
    assert held_bytes(rt) == reserved_bytes(cfg, D, torch.bfloat16)
    assert rt.server_stats()["device_bytes"] == held_bytes(rt)


@pytest.mark.parametrize("optimizer, mib", [("sgd", 36), ("adam", 108)])
def test_the_bank_dominates_and_scales_with_the_slots(optimizer, mib):
    one, many = (sum(reserved_bytes(ESampConfig(max_groups=g, optimizer=optimizer), 4096, torch.bfloat16).values())
                 for g in (1, 33))
    assert (many - one) / 32 == pytest.approx(mib * 2**20, rel=0.02)  # docs/server.md: per group at hidden size 4096


def reservation(log: str) -> tuple[float, float, float]:
    """(reserved, budget before, budget after) in MiB, from the server's start-up log."""
    m = re.search(r"ESamp reserves ([\d.]+) MiB on the device \(.*\): KV-cache budget ([\d.]+) MiB -> ([\d.]+) MiB", log)
    assert m, log[-3000:]
    return tuple(float(x) for x in m.groups())


@pytest.mark.server
def test_the_kv_budget_gives_up_what_esamp_holds(tiny_model):
    from sglang_esamp.launch.server import ServerProcess

    from ..client import esamp_stats

    groups = 256  # about 450 MiB of distillers (weights and Adam's moments) on the tiny model
    with ServerProcess(["--model-path", str(tiny_model), "--enable-esamp", "--esamp-max-groups", str(groups),
                        "--esamp-optimizer", "adam"]) as srv:
        reserved, before, after = reservation(srv.tail(200_000))
        held = esamp_stats(srv)["device_bytes"]
    expected = reserved_bytes(ESampConfig(max_groups=groups, optimizer="adam"), 64, torch.float32)
    assert held.keys() == expected.keys() and held["bank"] == expected["bank"] > 400 * 2**20
    base_copy = (expected["bank"] // groups - 4) // 3  # the bank's copy of the base, made at its first fit
    assert reserved == pytest.approx((sum(held.values()) + base_copy) / 2**20, abs=0.05)
    assert before - after == pytest.approx(reserved, abs=0.15)  # three numbers, each rounded to 0.1 MiB


@pytest.mark.server
def test_a_bank_larger_than_the_kv_budget_is_refused_at_start(tiny_model):
    from sglang_esamp.launch.server import ServerProcess

    with pytest.raises(RuntimeError, match="lower --esamp-max-groups"):
        with ServerProcess(["--model-path", str(tiny_model), "--enable-esamp", "--esamp-max-groups", "100000000"], timeout=300):
            pass
