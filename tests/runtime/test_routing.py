"""DPRouter: the DP rank an ESamp request is sent to, before SGLang expands its n samples."""

from types import SimpleNamespace

from sglang_esamp.core import ESampConfig
from sglang_esamp.runtime.routing import DPRouter


def req(params, text="Once upon a time", input_ids=None):
    return SimpleNamespace(sampling_params=params, text=text, input_ids=input_ids)


def test_a_named_group_always_gets_the_same_rank():
    router = DPRouter(4, ESampConfig())
    ranks = {router.dp_rank(req({"explore": 0.5, "explore_group": "team-a"}), None) for _ in range(5)}
    assert len(ranks) == 1 and ranks <= set(range(4))
    assert router.dp_rank(req({"explore_group": " team-a "}), None) in ranks  # the name without its whitespace
    names = {router.dp_rank(req({"explore": 0.5, "explore_group": f"g{i}"}), None) for i in range(64)}
    assert names == {0, 1, 2, 3}  # names spread over the ranks
    # the scope header's value is part of the group: another tenant's "team-a" may land elsewhere
    scoped = {router.dp_rank(req({"explore": 0.5, "explore_group": "team-a"}), f"tenant-{i}") for i in range(32)}
    assert len(scoped) > 1


def test_unnamed_groups_take_the_ranks_in_turn_and_plain_requests_are_left_alone():
    router = DPRouter(3, ESampConfig())
    assert [router.dp_rank(req({"explore": 0.25, "n": 4}), None) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    assert router.dp_rank(req({"temperature": 1.0, "n": 4}), None) is None
    assert router.dp_rank(req([{"temperature": 1.0}, {"explore": 0.5, "explore_group": "x"}]), None) == \
        router.dp_rank(req({"explore": 0.5, "explore_group": "x"}), None)  # a batch goes by its first ESamp entry


def test_grouping_by_prompt_routes_by_the_prompt():
    router = DPRouter(8, ESampConfig(group_by="prompt"))
    same = {router.dp_rank(req({"explore": 0.5}, text="The same prompt"), None) for _ in range(4)}
    assert len(same) == 1
    ids = {router.dp_rank(req({"explore": 0.5}, text=None, input_ids=[1, 2, 3]), None) for _ in range(3)}
    assert len(ids) == 1
    spread = {router.dp_rank(req({"explore": 0.5}, text=f"prompt {i}"), None) for i in range(64)}
    assert len(spread) == 8


def test_a_rank_the_client_chose_is_kept():
    """A client's own DP rank wins over the group's, under the current name (routed_dp_rank) or
    the deprecated one (data_parallel_rank), which SGLang maps to it only after the hook ran."""
    from sglang_esamp.runtime import hooks

    cfg = ESampConfig()
    manager = SimpleNamespace(esamp_config=cfg, esamp_router=DPRouter(4, cfg))
    for chosen in ({"routed_dp_rank": 3, "data_parallel_rank": None}, {"routed_dp_rank": None, "data_parallel_rank": 3}):
        obj = SimpleNamespace(sampling_params={"explore": 0.5, "explore_group": "team-a"}, text="Hi", input_ids=None, **chosen)
        hooks.generate_request(manager, obj)
        assert (obj.routed_dp_rank, obj.data_parallel_rank) == (chosen["routed_dp_rank"], chosen["data_parallel_rank"])
    obj = SimpleNamespace(sampling_params={"explore": 0.5, "explore_group": "team-a"}, text="Hi", input_ids=None,
                          routed_dp_rank=None, data_parallel_rank=None)
    hooks.generate_request(manager, obj)
    assert obj.routed_dp_rank in range(4)  # no choice: the group's rank
