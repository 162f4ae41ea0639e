"""Tasks load from the installed data packages; splits are disjoint; diversity metrics."""

import numpy as np
import pytest

from sglang_esamp.evaluation.diversity import embed, mean_pairwise_cosine, vendi
from sglang_esamp.evaluation.tasks import CREATIVE_WORDS, load_task


@pytest.mark.parametrize("task, size", [("gsm8k", 1319), ("svamp", 1000), ("math500", 500), ("champ", 79), ("humaneval", 164)])
def test_task_sizes(task, size):
    problems = load_task(task)
    assert len(problems) == size
    assert len({p.id for p in problems}) == size
    if problems[0].kind == "math":
        assert all(p.answer for p in problems)


def test_known_answers():
    assert load_task("gsm8k", limit=1)[0].answer == "18"  # Janet's ducks
    svamp = load_task("svamp", limit=1)[0]
    assert svamp.answer == "145" and svamp.question.endswith("How big is each group of bananas?")


def test_splits_are_disjoint_halves():
    tune, test = load_task("svamp", "tune"), load_task("svamp", "test")
    assert len(tune) == len(test) == 500 and not {p.id for p in tune} & {p.id for p in test}
    assert [p.id for p in load_task("svamp", "test", limit=3)] == [p.id for p in test[:3]]


def test_creative_openings_are_32_words():
    openings = load_task("creative")
    assert len(openings) >= 128 and len(load_task("creative", "test")) >= 64
    assert all(len(o.question.split()) == CREATIVE_WORDS for o in openings)


def test_chat_prompts_cover_every_category_in_both_splits():
    tune, test = load_task("chat", "tune"), load_task("chat", "test")
    assert len(tune) >= 64 and len(test) >= 64 and not {p.question for p in tune} & {p.question for p in test}
    assert all(p.kind == "chat" and p.question.endswith((".", "?")) for p in tune + test)
    for split in (tune, test):  # the five categories take turns in the file
        starts = {p.question.split()[0] for p in split}
        assert {"Name", "Write", "What"} <= starts and starts & {"Pick", "Choose"} and starts & {"Recommend", "Suggest"}


@pytest.mark.server
def test_chat_prompts_are_what_the_openai_chat_route_builds(tiny_esamp_server, embedded_model):
    """The harness sends token ids; they are the chat route's own prompt for the same message."""
    import requests
    from transformers import AutoTokenizer

    from sglang_esamp.evaluation.client import prompt_ids

    problem = load_task("chat", limit=1)[0]
    ids = prompt_ids(AutoTokenizer.from_pretrained(embedded_model), problem, "")
    body = {"model": "m", "messages": [{"role": "user", "content": problem.question}], "max_tokens": 1}
    usage = requests.post(tiny_esamp_server.url + "/v1/chat/completions", json=body, timeout=120).json()["usage"]
    assert usage["prompt_tokens"] == len(ids)


def test_bad_task_names_the_problem():
    with pytest.raises(ValueError, match="unknown task 'gsm9k'"):
        load_task("gsm9k")
    with pytest.raises(ValueError, match="unknown split"):
        load_task("svamp", "dev")


def test_similarity_orders_paraphrases_above_unrelated():
    emb = embed(["The cat sat on the mat.", "A cat was sitting on the mat.", "Stock markets fell sharply today."])
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert emb[0] @ emb[1] > 0.7 and emb[0] @ emb[2] < 0.2
    assert mean_pairwise_cosine(emb) == pytest.approx((emb[0] @ emb[1] + emb[0] @ emb[2] + emb[1] @ emb[2]) / 3, abs=1e-5)


def test_vendi_counts_effectively_distinct_samples():
    assert vendi(np.eye(4)) == pytest.approx(4.0, rel=1e-6)  # orthogonal: all distinct
    assert vendi(np.repeat(np.eye(4)[:1], 5, 0)) == pytest.approx(1.0, abs=1e-6)  # identical: one
    assert vendi(np.eye(4)[[0, 0, 1, 1]]) == pytest.approx(2.0, rel=1e-6)  # two pairs: two
    emb = embed(["a red apple", "a green apple", "the stock market", "a sailing boat at sea"])
    assert 2.0 < vendi(emb) < 4.0 and np.isnan(vendi(emb[:0]))
    assert np.isnan(mean_pairwise_cosine(emb[:1]))
