"""Runs without whitespace at the end of a sample's text (runtime/words.py) and the planner's
use of them, against the text the real tokenizer decodes."""

import random
import re
from types import SimpleNamespace

import pytest

from sglang_esamp.core import BatchLayout, ESampConfig
from sglang_esamp.runtime.plan import Form, plan_rows
from sglang_esamp.runtime.requests import RequestState
from sglang_esamp.runtime.words import WordRuns

from ..client import esamp_stats, generate_ok


def _trailing_run(text: str) -> int:
    """Oracle: characters after the text's last whitespace."""
    return len(re.search(r"\S*\Z", text).group())


@pytest.fixture(scope="module")
def tokenizer(embedded_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model)


def test_the_run_follows_the_decoded_text_token_by_token(tokenizer):
    words = WordRuns.from_tokenizer(tokenizer, len(tokenizer))
    ascii_ids = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).startswith("<|")
                 and all(32 <= ord(c) < 127 or c in "\n\t" for c in tokenizer.decode([i]))]
    rng = random.Random(0)
    for _ in range(200):
        ids = rng.sample(ascii_ids, rng.randint(1, 12))
        run = 0
        for k, t in enumerate(ids):  # extended one token at a time, as the steps append them
            run = words.extend(run, [t])
            assert run == _trailing_run(tokenizer.decode(ids[:k + 1]))
        assert words.trailing(ids, 10_000) == _trailing_run(tokenizer.decode(ids))


def test_the_prompt_sets_the_start_and_the_walk_back_stops_at_the_limit(tokenizer):
    words = WordRuns.from_tokenizer(tokenizer, len(tokenizer))
    ids = tokenizer("Once upon a time the Extraordinarilylongwordwithoutspaces", add_special_tokens=False)["input_ids"]
    assert words.trailing(ids, 10_000) == len("Extraordinarilylongwordwithoutspaces")
    assert 12 <= words.trailing(ids, 12) < len("Extraordinarilylongwordwithoutspaces")
    assert words.trailing([], 12) == 0


def test_ids_beyond_the_tokenizer_count_as_whitespace(tokenizer):
    words = WordRuns.from_tokenizer(tokenizer, len(tokenizer) + 3)
    assert words.extend(7, [len(tokenizer) + 1]) == 0


def _batch(texts, tokenizer, prompt="Tell me a story:"):
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    states = [None if t is None else RequestState(0.5, "a", slot=0, row_id=i) for i, t in enumerate(texts)]
    reqs = [SimpleNamespace(origin_input_ids=prompt_ids, output_ids=[] if t is None else tokenizer(t, add_special_tokens=False)["input_ids"],
                            sampling_params=SimpleNamespace(top_k=-1, top_p=1.0, min_p=0.0)) for t in texts]
    return states, reqs


def test_rows_inside_a_long_word_are_found_and_left_untilted_only_when_asked_and_unfiltered(tokenizer):
    words = WordRuns.from_tokenizer(tokenizer, len(tokenizer))
    texts = [" The cat sat", " They walked into theCastleofMoonlitGlassbeads", None, " A short one,"]
    states, reqs = _batch(texts, tokenizer)
    assert words.long_rows(states, reqs, 12) == {1}
    assert [s.run if s else None for s in states] == [3, len("theCastleofMoonlitGlassbeads"), None, 4]
    reqs[1].output_ids += tokenizer(" and home", add_special_tokens=False)["input_ids"]  # whitespace ends the run
    reqs[0].output_ids += tokenizer("isfyinglyunderstood", add_special_tokens=False)["input_ids"]
    assert words.long_rows(states, reqs, 12) == {0}
    assert states[0].run == len("satisfyinglyunderstood") and states[1].run == len("home")

    layout = BatchLayout.from_slots([0, 0, 0], "cpu")
    params = [reqs[r].sampling_params for r in (0, 1, 3)]
    rows = [states[r] for r in (0, 1, 3)]
    on = plan_rows(rows, params, layout, ESampConfig(tilt_max_run=12), 49152, long_words={0})
    off = plan_rows(rows, params, layout, ESampConfig(tilt_max_run=0), 49152, long_words={0})
    assert on.forms == (Form.UNTILTED, Form.PLAUSIBLE, Form.PLAUSIBLE) and on.betas == (0.0, 0.5, 0.5)
    assert off.forms == (Form.PLAUSIBLE,) * 3
    params[0] = SimpleNamespace(top_k=-1, top_p=0.95, min_p=0.0)  # a filtered row keeps its tilt inside a long word
    assert plan_rows(rows, params, layout, ESampConfig(tilt_max_run=12), 49152, long_words={0}).forms[0] is Form.CANDIDATES


def test_a_prompt_that_ends_inside_a_long_word_holds_the_first_step(tokenizer):
    words = WordRuns.from_tokenizer(tokenizer, len(tokenizer))
    states, reqs = _batch(["", " x"], tokenizer, prompt="The password was Xylophonequartzbanana")
    reqs[0].output_ids = []
    assert words.long_rows(states, reqs, 12) == {0}  # no output yet: the prompt's run counts


@pytest.mark.server
def test_a_live_server_holds_the_rows_that_end_in_a_long_word(tiny_esamp_server):
    long = "The password is Xylophonequartzbananamarmalade"  # a 32-character run at the end
    held = lambda: esamp_stats(tiny_esamp_server)["long_word_rows"]  # noqa: E731
    start = held()
    generate_ok(tiny_esamp_server, long, n=2, max_new_tokens=1, explore=1.0)
    assert held() == start + 2  # each sample's one step, before it draws a token
    generate_ok(tiny_esamp_server, long, n=2, max_new_tokens=1, explore=1.0, top_p=0.9)  # filtered: tilted
    generate_ok(tiny_esamp_server, long + " and", n=2, max_new_tokens=1, explore=1.0)  # whitespace ended the run
    generate_ok(tiny_esamp_server, long, n=2, max_new_tokens=1, explore=0.0)  # not tilted anyway
    assert held() == start + 2
