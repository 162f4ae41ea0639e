"""ESamp's series on /metrics (--enable-metrics), scraped from a real server as traffic flows."""

import re
import time

import pytest
import requests

from ..client import esamp_stats, generate_ok

pytestmark = pytest.mark.server


def scrape(server) -> dict[str, float]:
    """Every sglang:esamp_* sample, summed over its label sets, keyed by name and the
    labels that tell ESamp's series apart (form, kind)."""
    text = requests.get(server.url + "/metrics", timeout=30).text
    out: dict[str, float] = {}
    for name, labels, value in re.findall(r'^(sglang:esamp_\w+)(?:\{([^}]*)\})? ([0-9.eE+-]+)$', text, flags=re.M):
        own = dict(re.findall(r'(form|kind|le)="([^"]*)"', labels or ""))
        key = name + "".join(f"[{k}={v}]" for k, v in sorted(own.items()))
        out[key] = out.get(key, 0.0) + float(value)
    return out


def test_esamp_series_move_with_traffic(tiny_esamp_server):
    generate_ok(tiny_esamp_server, "Hello", max_new_tokens=4, explore=0.5)  # the series exist from the first update
    before = scrape(tiny_esamp_server)
    outs = generate_ok(tiny_esamp_server, "Once upon a time", n=3, max_new_tokens=16, ignore_eos=True, explore=0.5)
    generate_ok(tiny_esamp_server, "Once upon a time", max_new_tokens=16, ignore_eos=True, explore=0.5, top_k=5)
    deadline = time.time() + 10
    while esamp_stats(tiny_esamp_server)["live_groups"] and time.time() < deadline:
        time.sleep(0.2)
    after = scrape(tiny_esamp_server)
    grew = lambda key, by=1: after.get(key, 0) >= before.get(key, 0) + by  # noqa: E731
    assert grew("sglang:esamp_training_steps_total", 15)
    assert grew("sglang:esamp_tilted_row_steps_total[form=plausible]", 3 * 15)
    assert grew("sglang:esamp_tilted_row_steps_total[form=candidates]", 15)
    assert grew("sglang:esamp_training_step_seconds_count", 15) and after["sglang:esamp_training_step_seconds_sum"] > 0
    assert grew("sglang:esamp_group_rel_err_count", len(outs) + 1)
    assert after["sglang:esamp_live_groups"] == 0 and "sglang:esamp_held_slots" in after
    stats = esamp_stats(tiny_esamp_server)
    assert after["sglang:esamp_training_steps_total"] == stats["steps_finished"]  # the counter is the runtime's count
    assert all(after.get(k, 0) >= v for k, v in before.items() if k.endswith("_total"))  # counters never go down
