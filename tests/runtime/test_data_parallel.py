"""``--dp-size 2`` on the real CPU runtime (the tiny model, one core per rank): the requests of
one exploration group meet on one DP rank, plain requests keep SGLang's round robin, and a
group's greedy output is the single-replica server's."""

import pytest
import requests

from sglang_esamp.launch.server import ServerProcess

from ..client import generate_ok

STORY = "Once upon a time, in a small village by the sea,"
ARGS = ["--enable-esamp", "--esamp-max-groups", "4", "--esamp-group-ttl", "300"]

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def dp_server(tiny_model):
    with ServerProcess(["--model-path", str(tiny_model), *ARGS, "--dp-size", "2"]) as srv:
        assert "SGLANG_CPU_OMP_THREADS_BIND=0|1" in srv.tail(200_000)  # serve gave each rank its core
        yield srv


def ranks(outs) -> list[int]:
    return [o["meta_info"]["dp_rank"] for o in outs]


def held_slots(server) -> list[int]:
    info = requests.get(server.url + "/get_server_info", timeout=30).json()
    return [state["esamp"]["held_slots"] for state in info["internal_states"]]


def test_a_group_is_never_split_over_ranks(dp_server, tiny_model):
    # greedy, first ESamp request on a fresh server: the rank's distiller starts as a single server's would
    greedy = dict(temperature=0, max_new_tokens=12, explore=0.5, explore_group="dp-equal")
    first = generate_ok(dp_server, STORY, **greedy)
    outs = generate_ok(dp_server, STORY, n=4, temperature=1.0, max_new_tokens=6, explore=0.5, explore_group="dp-probe")
    assert len(set(ranks(outs))) == 1 and len({o["meta_info"]["esamp"]["group"] for o in outs}) == 1
    again = generate_ok(dp_server, STORY, n=2, max_new_tokens=4, explore=0.5, explore_group="dp-probe")
    assert set(ranks(again)) == set(ranks(outs))  # a later call naming the group meets it there
    unnamed = [generate_ok(dp_server, STORY, n=4, max_new_tokens=4, explore=0.5) for _ in range(2)]
    assert all(len(set(ranks(u))) == 1 for u in unnamed)  # a request's own group: its n samples together
    assert {ranks(u)[0] for u in unnamed} == {0, 1}  # and such groups take the ranks in turn
    # the groups held: "dp-equal", "dp-probe" and the two unnamed ones, each on one rank only
    assert sum(held_slots(dp_server)) == 4
    with ServerProcess(["--model-path", str(tiny_model), *ARGS]) as single:
        assert generate_ok(single, STORY, **greedy)["text"] == first["text"]


def test_plain_requests_keep_sglangs_balancing(dp_server):
    outs = generate_ok(dp_server, STORY, n=4, max_new_tokens=2)
    assert set(ranks(outs)) == {0, 1} and "esamp" not in outs[0]["meta_info"]
