"""Degenerate samples: text that has stopped being language, and per-group answer counts.

A sample is *degenerate* when it shows either failure that sampling far from the model's
typical text produces, and that neither perplexity under the model nor embedding
similarity sees (a soup of rare tokens scores as "diverse"):

- **token soup**: a run of ``SOUP_CHARS`` or more characters without whitespace
  ("...JourneyPetracecraftOperatorDayful..."); no English word is that long, and a URL
  or a number of that length does not occur in the story and chat tasks;
- **loop**: at least ``LOOP_WORDS`` words of which fewer than half are distinct
  ("the cat the cat the cat ...").

Also here, the counts that say how many different answers a group holds:

- ``distinct_k``: the number of parts of a greedy partition of the samples' embeddings
  in which a sample joins the first part whose first member it resembles (cosine above
  ``SAME_IDEA``), as NoveltyBench partitions answers into equivalence classes;
- ``first_words``: the share of distinct first words among the samples (case and
  punctuation folded), where a group whose rows share one state diverges or not.

Usage::

    is_degenerate("It was a dark and stormy night")   # False
    degenerate_rate(texts)                             # share of texts, 0..1
"""

from __future__ import annotations

import re

import numpy as np

SOUP_CHARS = 25  # characters without whitespace that make a run token soup
LOOP_WORDS = 20  # words a text needs before its distinct share is judged
SAME_IDEA = 0.7  # cosine above which two samples count as one answer in distinct_k

_RUN = re.compile(r"\S{%d,}" % SOUP_CHARS)
_WORD = re.compile(r"\w+")


def is_soup(text: str) -> bool:
    return _RUN.search(text) is not None


def is_loop(text: str) -> bool:
    words = [w.lower() for w in _WORD.findall(text)]
    return len(words) >= LOOP_WORDS and 2 * len(set(words)) < len(words)


def is_degenerate(text: str) -> bool:
    return is_soup(text) or is_loop(text)


def degenerate_rate(texts: list[str]) -> float:
    """Share of ``texts`` that are degenerate; nan for none."""
    return sum(map(is_degenerate, texts)) / len(texts) if texts else float("nan")


def distinct_k(emb: np.ndarray, threshold: float = SAME_IDEA) -> int:
    """Parts of the greedy partition of (n, E) unit-norm embeddings at cosine ``threshold``."""
    heads: list[np.ndarray] = []
    for e in emb:
        if not any(float(e @ h) > threshold for h in heads):
            heads.append(e)
    return len(heads)


def first_word(text: str) -> str | None:
    match = _WORD.search(text)
    return match.group(0).lower() if match else None


def first_words(texts: list[str]) -> float:
    """Share of distinct first words among the texts that have one; nan for none."""
    words = [w for w in map(first_word, texts) if w is not None]
    return len(set(words)) / len(words) if words else float("nan")
