"""``--esamp-distiller adapter`` in the real SGLang server (the tiny model): groups run a
rank-r block each on the saved mlp base, held once; the server holds the blocks' bytes, not
full distillers' (a hand count of the block's parameters), and a group's block trains.
core/test_adapter.py checks the architecture itself against float64 references."""

import os

import pytest
import torch

from sglang_esamp.core import ESampConfig
from sglang_esamp.core import warm_base as wb
from sglang_esamp.core.distiller import build_architecture, random_init
from sglang_esamp.launch.server import ServerProcess
from sglang_esamp.runtime.base import DIR_ENV, BaseStore

from ..client import esamp_stats, generate_ok

pytestmark = pytest.mark.server

STORY = "Once upon a time, in a small village by the sea,"
HIDDEN, RANK, GROUPS = 64, 8, 4  # the tiny model's hidden size


@pytest.fixture(scope="module")
def adapter_server(tiny_model, tmp_path_factory):
    """The server, with a fitted mlp base saved where it looks (a random one: fitted by its step count)."""
    folder = tmp_path_factory.mktemp("adapter-bases")
    old, os.environ[DIR_ENV] = os.environ.get(DIR_ENV), str(folder)
    try:
        cfg = ESampConfig(distiller="adapter", rank=RANK)
        arch = build_architecture("mlp", HIDDEN, cfg.intermediate, cfg.rank)
        base = random_init(arch.shapes(), 1, torch.Generator().manual_seed(5), None)
        BaseStore.for_model(str(tiny_model), cfg, HIDDEN).save(wb.WarmBase(arch, HIDDEN, "cpu", torch.float32, base,
                                                                           steps=wb.FIRST_STEPS, rows=wb.MIN_ROWS))
    finally:
        os.environ.pop(DIR_ENV) if old is None else os.environ.__setitem__(DIR_ENV, old)
    args = ["--model-path", str(tiny_model), "--enable-esamp", "--esamp-distiller", "adapter", "--esamp-rank", str(RANK),
            "--esamp-max-groups", str(GROUPS)]
    with ServerProcess(args, env={DIR_ENV: str(folder)}) as srv:
        yield srv


def test_groups_hold_a_block_each_on_the_loaded_base(adapter_server):
    assert "new groups start from the base distiller" in adapter_server.tail(50_000)
    stats = esamp_stats(adapter_server)
    block = 3 * HIDDEN * RANK + RANK + HIDDEN  # A, G, B, the gate's bias, the gain
    assert stats["bytes_per_group"] == block * 4 + 4  # fp32 with SGD, and a step count
    assert stats["device_bytes"]["bank"] == GROUPS * (block * 4 + 4)
    assert stats["base"]["fitted"]


def test_a_new_group_trains_its_block(adapter_server):
    outs = generate_ok(adapter_server, STORY, n=4, max_new_tokens=16, ignore_eos=True, explore=0.5)
    metas = [o["meta_info"]["esamp"] for o in outs]
    assert len({m["group"] for m in metas}) == 1
    assert all(m["steps"] == 15 and 0 < m["rel_err"] < 10 for m in metas), metas
