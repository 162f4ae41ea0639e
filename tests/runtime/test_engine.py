"""The in-process engine with ESamp on, on the tiny random model."""

import math

import pytest

from sglang_esamp.engine import make_engine
from sglang_esamp.runtime import flags


@pytest.fixture(scope="module")
def engine(tiny_model):
    eng = make_engine(esamp=True, model_path=str(tiny_model))
    yield eng
    eng.shutdown()
    flags.export(None)


def test_plain_request(engine):
    out = engine.generate("Hello", {"temperature": 0, "max_new_tokens": 5, "ignore_eos": True})
    assert out["meta_info"]["completion_tokens"] == 5 and "esamp" not in out["meta_info"]


def test_explore_in_process(engine):
    outs = engine.generate("Hello", {"max_new_tokens": 6, "ignore_eos": True, "n": 2, "explore": 0.5, "explore_group": "local"})
    metas = [o["meta_info"]["esamp"] for o in outs]
    assert [m["group"] for m in metas] == ["local", "local"] and metas[0]["slot"] == metas[1]["slot"]
    assert all(m["steps"] >= 4 and m["explore"] == 0.5 for m in metas)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_bad_explore_raises_a_clear_error(engine, bad):
    with pytest.raises(ValueError, match="explore must be"):
        engine.generate("Hello", {"max_new_tokens": 2, "explore": bad})
    assert engine.generate("Hello", {"max_new_tokens": 2})["meta_info"]["completion_tokens"] == 2
