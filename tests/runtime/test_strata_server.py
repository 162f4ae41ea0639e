"""Stratified codes in the real SGLang server: the n samples of a request are stratified
against the distribution SGLang itself reports for their first token.

Oracle: the first token's log-probabilities the server returns (its own softmax of the
logits it samples from). With stratified codes, each token of probability p gets
floor(n p) or ceil(n p) of the n samples; n independent draws rarely do.
"""

import math
from collections import Counter

import pytest
import requests

from ..client import error_message, generate, generate_ok

pytestmark = pytest.mark.server

PROMPT = "My favourite animal is the"
N = 32


def _first_tokens(server, **params):
    body = {"text": PROMPT, "sampling_params": {"n": N, "temperature": 1.0, "max_new_tokens": 1, **params},
            "return_logprob": True, "top_logprobs_num": 40}
    r = requests.post(server.url + "/generate", json=body, timeout=300)
    assert r.status_code == 200, r.text
    outs = r.json()
    return outs, Counter(o["meta_info"]["output_token_logprobs"][0][1] for o in outs)


def _within_grid(outs, counts) -> bool:
    """Each listed token's count within floor/ceil of N times its probability. A token is one
    interval of the codes' order (the vocabulary's), so the bound is exact for it; the tokens
    beyond the listed 40 are many intervals, each rounded on its own, and get no bound. The n
    copies may be prefilled in more than one batch, whose bf16 logits differ in their last bits
    (other matmul shapes), so each copy reports its own distribution: a token's count must lie
    between floor(N min_i p_i) and ceil(N max_i p_i) over the copies."""
    tops = [{tok: math.exp(lp) for lp, tok, _ in o["meta_info"]["output_top_logprobs"][0]} for o in outs]
    shared = set.intersection(*(set(t) for t in tops))
    assert len(shared) >= 30, "the copies' top 40 should mostly agree"
    return all(math.floor(N * min(t[tok] for t in tops) - 1e-3) <= counts.get(tok, 0) <= math.ceil(N * max(t[tok] for t in tops) + 1e-3)
               for tok in shared)


def test_stratified_samples_follow_the_grid_of_the_first_token(esamp_server):
    """At explore 0: with a tilt, the distiller may train between the batches the copies are
    prefilled in, which moves each copy's intervals by more than rounding, and the grid holds
    for one shared distribution only. The tilt itself is checked in test_esamp_server.py."""
    outs, counts = _first_tokens(esamp_server, stratified=True, explore=0)
    assert all(o["meta_info"]["esamp"]["stratified"] for o in outs)
    assert _within_grid(outs, counts), counts


def test_stratified_samples_with_top_k_follow_the_grid_of_the_kept_tokens(esamp_server):
    """With top-k 5 (SGLang's filtered path; every row of the batch stratified, so the codes
    draw them all): every sample is one of the 5 likeliest tokens, and each takes floor or ceil
    of N times its probability renormalised over those 5 (from the server's own log-probs)."""
    outs, counts = _first_tokens(esamp_server, stratified=True, explore=0, top_k=5)
    kept = [sorted(((math.exp(lp), tok) for lp, tok, _ in o["meta_info"]["output_top_logprobs"][0]), reverse=True)[:5]
            for o in outs]
    assert set(counts) <= set.union(*({tok for _, tok in k} for k in kept))
    shares = [{tok: q / sum(q for q, _ in k) for q, tok in k} for k in kept]
    for tok in set.intersection(*(set(sh) for sh in shares)):
        low, high = min(sh[tok] for sh in shares), max(sh[tok] for sh in shares)
        assert math.floor(N * low - 1e-3) <= counts.get(tok, 0) <= math.ceil(N * high + 1e-3), (tok, counts, shares[0])


def test_independent_draws_are_the_control(esamp_server):
    """Without codes, two requests of 32 independent draws do not both land on the grid (each
    did not in 10 of 10 tries)."""
    results = []
    for _ in range(2):
        outs, counts = _first_tokens(esamp_server, stratified=False, explore=0)
        assert not any(o["meta_info"]["esamp"]["stratified"] for o in outs)
        results.append(_within_grid(outs, counts))
    assert not all(results)


def test_stratified_is_on_by_default_with_explore_and_checked(esamp_server):
    outs = generate_ok(esamp_server, PROMPT, n=2, max_new_tokens=2, explore=0.25)
    assert [o["meta_info"]["esamp"]["stratified"] for o in outs] == [True, True]
    single = generate_ok(esamp_server, PROMPT, max_new_tokens=2, explore=0.25)
    assert single["meta_info"]["esamp"]["stratified"] is False  # n = 1: nothing to stratify
    r = generate(esamp_server, PROMPT, n=2, stratified="yes")
    assert r.status_code == 400 and "stratified must be true or false" in error_message(r)
    r = requests.post(esamp_server.url + "/v1/completions", json={"model": "default", "prompt": PROMPT, "n": 2, "max_tokens": 2,
                                                                  "stratified": 1}, timeout=60)
    assert r.status_code == 400 and "stratified must be true or false" in error_message(r)
    r = requests.post(esamp_server.url + "/v1/completions", json={"model": "default", "prompt": PROMPT, "n": 3, "max_tokens": 2,
                                                                  "stratified": True}, timeout=60)
    assert r.status_code == 200 and [m["stratified"] for m in r.json()["sglext"]["esamp"]] == [True] * 3


def test_plain_server_refuses_stratified(server):
    r = generate(server, PROMPT, n=2, stratified=True)
    assert r.status_code == 400 and "--enable-esamp" in error_message(r)
