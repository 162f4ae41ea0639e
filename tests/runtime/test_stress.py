"""Scheduler paths under pressure, against a real server: retracted decode requests, prefills
cut into chunks, and the overlap scheduler (on by default on the CPU). Every answer must be
complete, every group released, every slot returned."""

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ..client import esamp_stats, generate_ok

pytestmark = pytest.mark.server

CHUNK = 16


@pytest.fixture(scope="module")
def stress_server(tiny_model):
    """The tiny model with prefills cut into chunks of 16 tokens, a small KV pool, and SGLang's
    test switch that retracts running decode requests every third step (SGLANG_TEST_RETRACT:
    real KV pressure retracts the same way, but not at a step a test can count on)."""
    from sglang_esamp.launch.server import ServerProcess

    args = ["--model-path", str(tiny_model), "--enable-esamp", "--esamp-max-groups", "4", "--esamp-group-ttl", "0",
            "--esamp-init", "calibrated+prompt", "--chunked-prefill-size", str(CHUNK), "--max-total-tokens", "2048"]
    with ServerProcess(args, env={"SGLANG_TEST_RETRACT": "1"}) as srv:
        yield srv


def test_retraction_and_chunked_prefill_keep_every_answer_and_group_whole(stress_server):
    prompt = "The quick brown fox jumps over the lazy dog. " * 6  # about 60 tokens: 4 chunks

    def one(i):
        return generate_ok(stress_server, f"{prompt}{i}", n=2, max_new_tokens=24, ignore_eos=True, explore=0.5,
                           explore_group=f"stress-{i % 3}")

    with ThreadPoolExecutor(6) as pool:
        outs = [o for res in pool.map(one, range(6)) for o in res]
    assert len(outs) == 12 and all(o["meta_info"]["completion_tokens"] == 24 for o in outs)
    metas = [o["meta_info"]["esamp"] for o in outs]
    assert {m["group"] for m in metas} == {"stress-0", "stress-1", "stress-2"} and all(m["steps"] > 0 for m in metas)
    log = stress_server.tail(2_000_000)
    retracted = [int(n) for n in re.findall(r"Testing retraction\. #retracted_reqs: (\d+)", log)]
    assert sum(retracted) > 0, "no request was retracted"
    assert re.search(rf"#new-token: {CHUNK}\b", log), "no prefill was cut into chunks"
    deadline = time.time() + 20
    while esamp_stats(stress_server)["live_groups"] and time.time() < deadline:
        time.sleep(0.2)
    stats = esamp_stats(stress_server)
    assert stats["live_groups"] == 0 and stats["held_slots"] == 0 and stats["resets"] == 0 and not stats["faults"]
    info = requests.get(stress_server.url + "/get_server_info", timeout=30).json()
    assert info["internal_states"][0].get("disable_overlap_schedule") is False  # the overlap scheduler ran all of it
