"""sgl.gen(..., explore=...) through SGLang's real interpreter and the real CPU server."""

import pytest
import sglang as sgl
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

import sglang_esamp


@pytest.fixture(scope="module")
def backend(tiny_esamp_server):
    return RuntimeEndpoint(tiny_esamp_server.url)


def esamp_meta(state, name):
    meta = state.get_meta_info(name)
    return [m.get("esamp") for m in meta] if isinstance(meta, list) else meta.get("esamp")


@sgl.function
def fork_program(s, k, group=None):
    s += "Once upon a time"
    forks = s.fork(k)
    forks += sgl.gen("cont", max_tokens=4, ignore_eos=True, explore=0.5, explore_group=group)
    s["groups"] = [f.get_meta_info("cont")["esamp"]["group"] for f in forks]


@pytest.mark.server
def test_fork_children_share_a_group_and_programs_do_not(backend):
    first = fork_program.run(k=3, backend=backend)
    second = fork_program.run(k=3, backend=backend)
    assert len(set(first["groups"])) == 1 and len(set(second["groups"])) == 1
    assert first["groups"][0] != second["groups"][0]


@pytest.mark.server
def test_named_group_is_shared_across_programs(backend):
    a = fork_program.run(k=2, group="shared-run", backend=backend)
    b = fork_program.run(k=2, group="shared-run", backend=backend)
    assert set(a["groups"]) == set(b["groups"]) == {"shared-run"}


@sgl.function
def nested_program(s):
    s += "Hello"
    outer = s.fork(2)
    outer += sgl.gen("a", max_tokens=3, ignore_eos=True, explore=0.25)
    inner = outer[0].fork(2)
    inner += sgl.gen("b", max_tokens=3, ignore_eos=True, explore=0.25)
    private = s.fork(2)
    private += sgl.gen("c", max_tokens=3, ignore_eos=True, explore=0.25, explore_group=False)
    s["outer"] = {f.get_meta_info("a")["esamp"]["group"] for f in outer}
    s["inner"] = {f.get_meta_info("b")["esamp"]["group"] for f in inner}
    s["private"] = {f.get_meta_info("c")["esamp"]["group"] for f in private}


@pytest.mark.server
def test_nested_forks_and_private_groups(backend):
    state = nested_program.run(backend=backend)
    assert len(state["outer"]) == 1 and len(state["inner"]) == 1
    assert state["outer"] != state["inner"]
    assert len(state["private"]) == 2


@sgl.function
def defaults_program(s):
    s += "Hi"
    s += sgl.gen("inherit", max_tokens=3, ignore_eos=True)
    s += sgl.gen("override", max_tokens=3, ignore_eos=True, explore=0.0)


@pytest.mark.server
def test_run_level_default_and_override(backend):
    state = defaults_program.run(backend=backend, explore=0.75)
    assert esamp_meta(state, "inherit")["explore"] == 0.75
    assert esamp_meta(state, "override")["explore"] == 0.0
    plain = defaults_program.run(backend=backend)
    assert esamp_meta(plain, "inherit") is None


@sgl.function
def n_program(s):
    s += "Hi"
    s += sgl.gen("many", max_tokens=3, ignore_eos=True, n=3, explore=0.5)


@pytest.mark.server
def test_gen_with_n_uses_one_group(backend):
    state = n_program.run(backend=backend)
    assert isinstance(state["many"], list) and len(state["many"]) == 3
    metas = esamp_meta(state, "many")
    assert len({m["group"] for m in metas}) == 1 and all(m["explore"] == 0.5 for m in metas)


@pytest.mark.server
def test_bad_explore_is_a_clear_error(backend):
    with pytest.raises(ValueError, match=r"gen\(explore=...\) must be a finite number >= 0"):
        sgl.gen("x", explore=-1)
    with pytest.raises(ValueError, match="explore_group"):
        sgl.gen("x", explore=0.2, explore_group=3)

    @sgl.function
    def too_much(s):
        s += "Hi"
        s += sgl.gen("x", max_tokens=2, explore=9.0)

    state = too_much.run(backend=backend)
    error = state.error()  # SGLang's interpreter keeps a program's error on its state
    assert isinstance(error, RuntimeError) and "explore must be in [0, 4.0]" in str(error)


def test_package_gen_is_the_patched_gen():
    assert sglang_esamp.gen is sgl.gen
    expr = sglang_esamp.gen("y", explore=0.3)
    assert expr.sampling_params.to_srt_kwargs()["explore"] == 0.3
    select = sgl.gen("z", choices=["a", "b"], explore=0.3)  # a select: nothing to explore
    assert not hasattr(select, "sampling_params") or getattr(select.sampling_params, "explore", None) is None


@sgl.function
def fork_default_program(s):
    s += "Hello"
    forks = s.fork(2)
    forks += sgl.gen("x", max_tokens=2, ignore_eos=True)
    s["metas"] = [f.get_meta_info("x").get("esamp") for f in forks]


@pytest.mark.server
def test_run_batch_default_reaches_every_program_and_fork(backend):
    states = fork_default_program.run_batch([{}, {}], backend=backend, num_threads=2, explore=0.5)
    groups = []
    for state in states:
        metas = state["metas"]
        assert all(m is not None and m["explore"] == 0.5 for m in metas)
        assert len({m["group"] for m in metas}) == 1  # one fork, one group
        groups.append(metas[0]["group"])
    assert groups[0] != groups[1]  # two programs, two groups
    plain = fork_default_program.run_batch([{}], backend=backend)
    assert plain[0]["metas"] == [None, None]


def test_run_level_explore_is_checked():
    with pytest.raises(ValueError, match=r"explore=\.\.\.\) must be a finite number"):
        fork_default_program.run_batch([{}], explore=float("nan"))


@pytest.mark.server
def test_streaming_gen_with_n_is_refused_clearly(backend):
    @sgl.function
    def streamed(s):
        s += "Hi"
        s += sgl.gen("many", max_tokens=3, n=2, explore=0.5)

    state = streamed.run(backend=backend, stream=True)
    list(state.text_iter())  # ends; does not hang
    assert isinstance(state.error(), ValueError) and "gen(n=2) cannot stream" in str(state.error())
    single = n_program.run(backend=backend)  # without streaming, n > 1 still works
    assert len(single["many"]) == 3
