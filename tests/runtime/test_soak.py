"""Slot reuse and a bounded soak test on the tiny model with only 4 distiller slots."""

import random
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from ..client import esamp_stats, generate, generate_ok

pytestmark = pytest.mark.server  # every test here talks to a real server

PROMPTS = ["Once upon a time", "The best way to learn", "In 1850, the city", "My favourite recipe", "Why is the sky"]


def server_rss(server) -> int:
    """Resident bytes of the server and all its children (launcher, scheduler, detokenizer)."""
    root = psutil.Process(server.proc.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def wait_idle(server, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        stats = esamp_stats(server)
        if stats["live_groups"] == 0:
            return stats
        time.sleep(0.2)
    raise AssertionError(f"groups still live: {stats}")


def test_slots_are_reused_fresh_after_release(tiny_esamp_server):
    before = wait_idle(tiny_esamp_server)
    metas = [
        generate_ok(tiny_esamp_server, "Hello", max_new_tokens=6, ignore_eos=True, explore=0.3, explore_group=f"g{i}")["meta_info"]["esamp"]
        for i in range(6)
    ]
    assert all(m["slot"] in range(4) for m in metas)
    assert all(m["steps"] in (4, 5) for m in metas)  # each group starts from a fresh distiller
    stats = wait_idle(tiny_esamp_server)
    assert stats["held_slots"] == 0 and stats["denied_groups"] == before["denied_groups"]


HOSTILE = [
    {"custom_params": {"__esamp__": {"explore": 1e300, "group": "p:x"}}},
    {"custom_params": {"__esamp__": "x"}},
    {"explore": 1e300},
    {"explore": -1},
    {"explore": 0.5, "explore_group": "line\nbreak"},
    {"explore": 0.5, "explore_group": "x" * 300},
]


def one_request(server, i, rng):
    if rng.random() < 0.1:  # a hostile client: refused, and nobody else notices
        params = {"max_new_tokens": 8, **rng.choice(HOSTILE)}
        return generate(server, PROMPTS[i % 5], timeout=300, **params), params | {"hostile": True}
    kind = rng.random()
    params = {"max_new_tokens": rng.choice([8, 16, 24]), "ignore_eos": True, "temperature": rng.choice([0, 0.7, 1.0])}
    if kind < 0.6:
        params["explore"] = rng.choice([0.0, 0.25, 1.0])
    if kind < 0.3:
        params["explore_group"] = f"shared-{i % 3}"
    if rng.random() < 0.2:
        params["n"] = rng.choice([2, 4])
    if rng.random() < 0.05:  # a few aborts, by a client that gives up
        try:
            body = {"text": PROMPTS[i % 5], "sampling_params": params | {"max_new_tokens": 400}}
            requests.post(server.url + "/generate", json=body, timeout=0.5)
        except requests.Timeout:
            return "aborted", params
        return "finished-before-abort", params
    r = generate(server, PROMPTS[i % 5], timeout=300, **params)
    return r, params


def test_soak_mixed_traffic(tiny_esamp_server):
    jobs = list(range(220))
    before = wait_idle(tiny_esamp_server)  # the server's counters so far, from earlier modules too
    with ThreadPoolExecutor(16) as pool:
        warm = list(pool.map(lambda i: one_request(tiny_esamp_server, i, random.Random(i)), jobs[:20]))
        wait_idle(tiny_esamp_server)
        rss_after_warmup = server_rss(tiny_esamp_server)
        results = warm + list(pool.map(lambda i: one_request(tiny_esamp_server, i, random.Random(i)), jobs[20:]))
    aborted = sum(1 for r, _ in results if r == "aborted")
    answered = [(r, p) for r, p in results if not isinstance(r, str)]
    assert len(answered) + aborted + sum(1 for r, _ in results if r == "finished-before-abort") == 220
    assert aborted >= 1
    hostile = [(r, p) for r, p in answered if p.get("hostile")]
    answered = [(r, p) for r, p in answered if not p.get("hostile")]
    assert hostile and all(r.status_code == 400 for r, _ in hostile)
    for r, params in answered:
        assert r.status_code == 200, r.text
        outs = r.json() if isinstance(r.json(), list) else [r.json()]
        assert len(outs) == params.get("n", 1)
        for o in outs:
            assert o["meta_info"]["completion_tokens"] == params["max_new_tokens"]
            assert ("esamp" in o["meta_info"]) == ("explore" in params or "explore_group" in params)
    stats = wait_idle(tiny_esamp_server, timeout=60)
    delta = {k: stats[k] - before[k] for k in ("resets", "steps_submitted", "denied_groups")}
    assert delta["resets"] == 0 and delta["steps_submitted"] > 100, delta
    assert delta["denied_groups"] > 0, delta  # 16 concurrent groups for 4 slots: the rest ran untilted
    assert stats["config"]["stop_cap"] == "hold" and stats["tilted_rows"]["plausible"] > before["tilted_rows"]["plausible"]
    growth = server_rss(tiny_esamp_server) / rss_after_warmup
    assert growth < 1.10, f"resident memory grew by {growth:.2f}x after warm-up"
