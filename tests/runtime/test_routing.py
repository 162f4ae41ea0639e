"""DPRouter: the DP rank one prompt of an ESamp request is sent to, once its token ids are
known and before SGLang copies it into its n samples (runtime/routing.py)."""

import hashlib
from types import SimpleNamespace

from sglang_esamp.core import ESampConfig
from sglang_esamp.runtime.params import SCOPE_KEY
from sglang_esamp.runtime.routing import DPRouter

IDS = [1, 2, 3]


def test_a_named_group_always_gets_the_same_rank():
    router = DPRouter(4, ESampConfig())
    ranks = {router.dp_rank({"explore": 0.5, "explore_group": "team-a"}, IDS) for _ in range(5)}
    assert len(ranks) == 1 and ranks <= set(range(4))
    assert router.dp_rank({"explore_group": " team-a "}, [9, 9]) in ranks  # the name without its whitespace, any prompt
    names = {router.dp_rank({"explore": 0.5, "explore_group": f"g{i}"}, IDS) for i in range(64)}
    assert names == {0, 1, 2, 3}  # names spread over the ranks
    # the scope header's value is part of the group: another tenant's "team-a" may land elsewhere
    scoped = {router.dp_rank({"explore": 0.5, "explore_group": "team-a", SCOPE_KEY: f"tenant-{i}"}, IDS) for i in range(32)}
    assert len(scoped) > 1


def test_unnamed_groups_take_the_ranks_in_turn_and_plain_requests_are_left_alone():
    router = DPRouter(3, ESampConfig())
    assert [router.dp_rank({"explore": 0.25, "n": 4}, IDS) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    assert router.dp_rank({"temperature": 1.0, "n": 4}, IDS) is None
    assert router.dp_rank(None, IDS) is None


def test_grouping_by_prompt_routes_by_the_token_ids():
    router = DPRouter(8, ESampConfig(group_by="prompt"))
    assert len({router.dp_rank({"explore": 0.5}, list(IDS)) for _ in range(4)}) == 1
    spread = {router.dp_rank({"explore": 0.5}, [i, 7]) for i in range(64)}
    assert len(spread) == 8


def test_each_prompt_is_routed_and_a_rank_the_client_chose_is_kept():
    """The hook on SGLang's tokenized object: a prompt without a rank gets its group's; one that
    carries a rank (the client's, under either spelling, which SGLang has mapped to
    routed_dp_rank by then) keeps it."""
    from sglang_esamp.runtime import hooks

    cfg = ESampConfig()
    manager = SimpleNamespace(esamp_config=cfg, esamp_router=DPRouter(4, cfg))
    named = {"explore": 0.5, "explore_group": "team-a"}
    obj = SimpleNamespace(sampling_params=named, routed_dp_rank=3)
    hooks.tokenized_request(manager, obj, "Hi", IDS)
    assert obj.routed_dp_rank == 3
    obj = SimpleNamespace(sampling_params=named, routed_dp_rank=None)
    hooks.tokenized_request(manager, obj, "Hi", IDS)
    digest = hashlib.sha256("\nteam-a".encode()).digest()  # no scope, then the name
    assert obj.routed_dp_rank == int.from_bytes(digest[:8], "big") % 4
