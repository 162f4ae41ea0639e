"""``--dp-size 2`` on the real CPU runtime (the tiny model, one core per rank, grouping by
prompt): the requests of one exploration group meet on one DP rank (named groups by their
name, each entry of a batch by its own, unnamed ones by their prompt's token ids, as text or
as ids), plain requests keep SGLang's round robin, and a group's greedy output is the
single-replica server's. Unnamed groups taking the ranks in turn (grouping by request) is
tests/runtime/test_routing.py's."""

import hashlib

import pytest
import requests

from sglang_esamp.launch.server import ServerProcess

from ..client import generate_ok

STORY = "Once upon a time, in a small village by the sea,"
ARGS = ["--enable-esamp", "--esamp-max-groups", "4", "--esamp-group-ttl", "300"]

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def dp_server(tiny_model):
    with ServerProcess(["--model-path", str(tiny_model), *ARGS, "--dp-size", "2", "--esamp-group-by", "prompt"]) as srv:
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
    # the groups held: "dp-equal" and "dp-probe", each on one rank only
    assert sum(held_slots(dp_server)) == 2
    with ServerProcess(["--model-path", str(tiny_model), *ARGS]) as single:
        assert generate_ok(single, STORY, **greedy)["text"] == first["text"]


def test_plain_requests_keep_sglangs_balancing(dp_server):
    outs = generate_ok(dp_server, STORY, n=4, max_new_tokens=2)
    assert set(ranks(outs)) == {0, 1} and "esamp" not in outs[0]["meta_info"]


def two_ranks() -> tuple[str, str]:
    """Two group names whose stable hashes (sha256 of "\\n" + name, no scope) fall on ranks 0 and 1."""
    names = {}
    for i in range(64):
        name = f"batch-{i}"
        names.setdefault(int.from_bytes(hashlib.sha256(f"\n{name}".encode()).digest()[:8], "big") % 2, name)
    return names[0], names[1]


def test_each_entry_of_a_batch_goes_to_its_own_groups_rank(dp_server):
    first, second = two_ranks()
    body = {"text": [STORY, "The robot opened the door and"],
            "sampling_params": [dict(n=2, max_new_tokens=3, explore=0.5, explore_group=name) for name in (first, second)]}
    r = requests.post(dp_server.url + "/generate", json=body, timeout=300)
    assert r.status_code == 200, r.text
    by_group = {}
    for out in r.json():
        by_group.setdefault(out["meta_info"]["esamp"]["group"], set()).add(out["meta_info"]["dp_rank"])
    assert by_group == {first: {0}, second: {1}}


def test_grouping_by_prompt_meets_the_prompt_on_one_rank_as_text_or_ids(dp_server):
    """--esamp-group-by prompt under DP: requests without a name join by their prompt's token
    ids, so the text and the ids of one prompt, sent apart, land on one rank in one group."""
    params = dict(n=2, max_new_tokens=3, explore=0.5)
    for prompt in (STORY, "The robot opened the door and"):
        r = requests.post(dp_server.url + "/tokenize", json={"prompt": prompt}, timeout=60)
        assert r.status_code == 200, r.text
        ids = r.json()["tokens"]
        text = generate_ok(dp_server, prompt, **params)
        r = requests.post(dp_server.url + "/generate", json={"input_ids": ids, "sampling_params": params}, timeout=300)
        assert r.status_code == 200, r.text
        outs = text + r.json()
        assert len({o["meta_info"]["esamp"]["group"] for o in outs}) == 1
        want = int.from_bytes(hashlib.sha256(repr(ids).encode()).digest()[:8], "big") % 2  # the ids' stable hash
        assert set(ranks(outs)) == {want}
