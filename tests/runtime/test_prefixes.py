"""Rows that share their group's prefix (runtime/prefixes.py) and the planner's use of them."""

from types import SimpleNamespace

from sglang_esamp.core import BatchLayout, ESampConfig
from sglang_esamp.runtime.plan import Form, plan_rows
from sglang_esamp.runtime.prefixes import shared_rows
from sglang_esamp.runtime.requests import RequestState


def _batch(rows):
    """rows: (group key, output ids) per batch row; None for a plain row."""
    states = [None if r is None else RequestState(0.5, r[0], slot=0 if r[0] == "a" else 1, row_id=i) for i, r in enumerate(rows)]
    reqs = [SimpleNamespace(output_ids=[] if r is None else list(r[1]), sampling_params=SimpleNamespace(top_k=-1, top_p=1.0, min_p=0.0))
            for r in rows]
    return states, reqs


def test_identical_outputs_of_one_group_are_shared_and_unique_ones_diverge_for_good():
    states, reqs = _batch([("a", [5, 6]), ("a", [5, 6]), ("a", [5, 7]), ("b", [5, 6]), None, ("a", [])])
    assert shared_rows(states, reqs) == {0, 1}  # row 3 has the same tokens but another group
    assert [s.diverged if s else None for s in states] == [False, False, True, True, None, False]  # an empty output has not started
    reqs[2].output_ids = [5, 6]  # a diverged row is not compared again, even if it met another
    assert shared_rows(states, reqs) == {0, 1}


def test_at_the_first_token_every_sample_of_a_group_is_shared():
    states, reqs = _batch([("a", []), ("a", []), ("a", [])])
    assert shared_rows(states, reqs) == {0, 1, 2}


def test_planner_leaves_shared_rows_untilted_only_when_asked():
    states, reqs = _batch([("a", [1]), ("a", [1]), ("a", [2])])
    layout = BatchLayout.from_slots([0, 0, 0], "cpu")
    params = [r.sampling_params for r in reqs]
    on = plan_rows(states, params, layout, ESampConfig(), 49152, {0, 1})
    off = plan_rows(states, params, layout, ESampConfig(shared_prefix_tilt="off"), 49152, {0, 1})
    assert on.forms == (Form.PLAUSIBLE,) * 3
    assert off.forms == (Form.UNTILTED, Form.UNTILTED, Form.PLAUSIBLE) and off.betas == (0.0, 0.0, 0.5)
