"""The tilt is its definition on every architecture, in every form, under SGLang's request
processing: a real server per tiny model, with the probe of tests/probe/sitecustomize.py
checking every tilted row of every step against a float64 reference.

The servers run in float32, so that the reference can be tight (bf16 would round the
logits by more than the errors these tests look for)."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..client import esamp_stats, generate_ok
from ..tiny_models import build

pytestmark = pytest.mark.server

PROBE_DIR = Path(__file__).resolve().parents[1] / "probe"
# kind -> (tilt mode, stop cap): each architecture runs one combination, so every mode and cap meets a server
CASES = {"llama_untied": ("paper", "logit"), "gemma3": ("residual", "hold"), "qwen3": ("residual", "probability")}
EXTRA = {"qwen3": ["--esamp-tilt-max-gain", "1.5"]}  # the bound on any token's gain, in one server
DENSE_KIND = "llama_untied"  # the method as published: the dense form; the others take the plausible form (the default)
EOS = "2"  # every tiny model's end-of-sequence id
BASE = {"max_new_tokens": 12, "ignore_eos": True, "explore": 0.75}
REQUESTS = {  # the sampling settings users send, each with ESamp on
    "sampled": {"temperature": 0.8, "n": 2},
    "greedy": {"temperature": 0.0},
    "penalties": {"frequency_penalty": 0.8, "presence_penalty": 0.5, "repetition_penalty": 1.3,
                  "logit_bias": {EOS: 16.0, "100": 3.0}},  # end-of-sequence among the likeliest: the tilt tries to raise it
    "regex": {"regex": "[a-z ]{6}"},
    "top_k": {"top_k": 20, "logit_bias": {EOS: 12.0}, "n": 2},
    "top_p": {"top_p": 0.9, "temperature": 0.7},
    "min_p": {"min_p": 0.05, "logit_bias": {EOS: 8.0}, "n": 4},
}


@pytest.fixture(scope="module", params=list(CASES))
def probed(request, embedded_model, tmp_path_factory):
    """A server on the tiny model of this kind with the probe on; the probe's records of all
    of REQUESTS, sent concurrently."""
    from sglang_esamp.launch.server import ServerProcess

    kind = request.param
    tilt, cap = CASES[kind]
    model = build(kind, tmp_path_factory.mktemp(kind), embedded_model, init_range=0.5, eos_gain=3.0)
    probe = tmp_path_factory.mktemp("probe") / "rows.jsonl"
    env = {"ESAMP_PROBE": str(probe), "PYTHONPATH": os.pathsep.join([str(PROBE_DIR), os.environ.get("PYTHONPATH", "")])}
    args = ["--model-path", str(model), "--dtype", "float32", "--enable-esamp", "--esamp-init", "random", "--esamp-tilt", tilt,
            "--esamp-stop-cap", cap, "--esamp-tail-floor", "0" if kind == DENSE_KIND else "0.05", *EXTRA.get(kind, [])]
    with ServerProcess(args, env=env) as srv:
        with ThreadPoolExecutor(len(REQUESTS)) as pool:
            outs = dict(zip(REQUESTS, pool.map(lambda p: generate_ok(srv, "Once upon a time", **BASE, **p), REQUESTS.values())))
        stats = esamp_stats(srv)
        yield kind, outs, [json.loads(line) for line in probe.read_text().splitlines()], stats


def test_every_row_samples_the_definition(probed):
    kind, outs, rows, stats = probed
    assert len(outs["regex"]["text"]) == 6 and set(outs["regex"]["text"]) <= set("abcdefghijklmnopqrstuvwxyz ")
    assert stats["faults"] == {}, stats["faults"]
    forms = {r["form"] for r in rows}
    assert forms == {"dense" if kind == DENSE_KIND else "plausible", "candidates"}, forms
    bad = [r for r in rows if not r["same_support"] or r["max_logprob_err"] > 2e-3]
    assert not bad, f"{kind}: {len(bad)} of {len(rows)} rows differ from the reference, e.g. {bad[:2]}"
    assert all(r["argmax_same"] for r in rows if r["greedy"])
    assert max(r["head_err"] for r in rows) < 1e-3  # the reference head is the server's own
    # the checks are not vacuous: the tilt moves the distribution, under penalties, bias and grammar
    assert sorted(r["tilt_size"] for r in rows)[len(rows) // 2] > 0.05
    assert any(r["processed"] > 1.0 for r in rows) and any(r["masked"] > 0 for r in rows)
    assert any(r["greedy"] for r in rows) and any(r["form"] == "candidates" and r["kept"] < 50 for r in rows)
    if kind in EXTRA:  # the bound on a token's gain acted on some rows, and the reference has it
        assert any(r["gain_bound"] for r in rows)


def test_the_stop_cap_holds_on_every_row(probed):
    kind, _, rows, _ = probed
    assert all(r["stop_after"] <= r["stop_before"] * (1 + 1e-4) + 1e-7 for r in rows), kind
    if CASES[kind][1] == "hold":  # neither higher nor lower, with the stop ids left out of the tilt
        assert all(abs(r["stop_after"] - r["stop_before"]) <= r["stop_before"] * 1e-4 + 1e-7 for r in rows), kind
        assert {r["form"] for r in rows if r["stop_held"]} == {"plausible", "candidates"}  # a stop id among the tilted set
    else:  # exercised: with the end-of-sequence row of the head scaled up, the tilt tries to raise
        # it now and then (tests/runtime/test_runtime.py binds it in both forms by construction)
        assert any(r["cap_bound"] for r in rows)
