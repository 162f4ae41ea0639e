"""``--tp-size 2`` on the real CPU runtime (the tiny model, one core per rank, gloo): every
rank runs the same distillers on the replicated hidden states with the gathered LM head,
and the ranks agree at every step: the same predictions and the same tokens drawn by each
rank before SGLang reconciles them (runtime/trace.py), with the worker-thread trainer, the
default staleness, --esamp-train-every 2 and metrics on."""

import json
import re
import time
import warnings

import pytest
import requests

from sglang_esamp.launch.server import ServerProcess

from ..client import generate_ok

STORY = "Once upon a time, in a small village by the sea,"
ARGS = ["--enable-esamp", "--esamp-max-groups", "4"]
TP_ARGS = ["--esamp-trainer", "thread", "--esamp-train-every", "2", "--enable-metrics"]
DIGEST = re.compile(r"ESamp tensor-parallel rank (\d) of 2: (\d+) steps, distiller digest (\S+)")

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tp-trace")


@pytest.fixture(scope="module")
def tp_server(tiny_model, trace_dir):
    """One retry of the start, reported as a warning when taken. Once in five local runs a TP 2
    start exited with code 3 before answering: uvicorn could not bind the HTTP port. That port
    was picked free about 30 s earlier from the kernel's ephemeral range, which the ranks'
    own outgoing connections (gloo, ZMQ) draw from while the server starts; ``free_port``
    now picks below that range and below SGLang's own (22000-29999). No failure has been
    seen since; the retry stays as a guard, and a start that fails twice still fails."""
    args = ["--model-path", str(tiny_model), *ARGS, *TP_ARGS, "--tp-size", "2"]
    env = {"SGLANG_ESAMP_TP_TRACE": str(trace_dir)}
    try:
        srv = ServerProcess(args, env=env).__enter__()
    except RuntimeError as exc:
        warnings.warn(f"TP 2 server start failed once; retrying:\n{str(exc)[-3000:]}", stacklevel=1)
        srv = ServerProcess(args, env=env).__enter__()
    try:
        yield srv
    finally:
        srv.stop()


def rank_digests(server) -> dict[int, tuple[int, str]]:
    """Each rank's (steps, digest), as it logged them when it read the last server-info request."""
    info = requests.get(server.url + "/get_server_info", timeout=60).json()
    assert info["internal_states"][0]["esamp"]["tp"]["size"] == 2
    for _ in range(20):
        found = {}
        for rank, steps, digest in DIGEST.findall(server.tail(400_000)):
            found[int(rank)] = (int(steps), digest)
        if len(found) == 2 and found[0][0] == found[1][0]:
            return found
        time.sleep(0.5)
    return found


def test_tp2_runs_esamp_like_one_rank(tp_server, tiny_esamp_server, trace_dir):
    greedy = dict(temperature=0, max_new_tokens=12, explore=0)
    tp2_greedy = generate_ok(tp_server, STORY, **greedy)["text"]

    first = generate_ok(tp_server, STORY, n=4, temperature=1.0, max_new_tokens=16, explore=0.5, explore_group="tp")
    later = generate_ok(tp_server, STORY, n=4, temperature=1.0, max_new_tokens=32, explore=0.5, explore_group="tp")
    m1, m2 = first[0]["meta_info"]["esamp"], later[0]["meta_info"]["esamp"]
    # a training step every second decode step (--esamp-train-every 2): 15 and 31 decode steps
    assert m1["steps"] >= 6 and m2["steps"] >= m1["steps"] + 13
    # learning: a fresh group's error at its first training steps, then after 16 more on the same text
    learn = dict(temperature=0, explore=0, explore_group="tp-learn")
    start = generate_ok(tp_server, STORY, max_new_tokens=5, **learn)["meta_info"]["esamp"]  # 4 decode steps: 1 or 2 trained
    after = generate_ok(tp_server, STORY, max_new_tokens=34, **learn)["meta_info"]["esamp"]  # 16 more training steps
    assert start["steps"] >= 1 and after["steps"] >= start["steps"] + 14, (start, after)
    assert after["rel_err"] < 0.5 * start["rel_err"], (start, after)
    digests = rank_digests(tp_server)
    assert digests[0] == digests[1], digests  # the same steps, the same weights on both ranks
    traces = [json.loads((trace_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert traces[0]["steps"] == traces[1]["steps"] >= 60, [t["steps"] for t in traces]
    steps = list(zip(traces[0]["rows"], traces[1]["rows"]))
    predicted = [a[1] != b[1] for a, b in steps]
    drawn = [a[2] != b[2] for a, b in steps]
    assert sum(predicted) == 0 and sum(drawn) == 0, (sum(predicted), sum(drawn), len(steps))
    assert sum(a[2] != 0 for a, _ in steps) >= 40 and len({a[1] for a, _ in steps}) >= 40  # real draws, varied steps

    # explore=0 samples untilted, so any one-rank server of this model gives TP 1's answer: the shared one
    assert generate_ok(tiny_esamp_server, STORY, **greedy)["text"] == tp2_greedy
