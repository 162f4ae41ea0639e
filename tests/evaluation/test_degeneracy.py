"""Degenerate samples and answer counts (evaluation/degeneracy.py), on hand-made texts."""

import numpy as np

from sglang_esamp.evaluation.degeneracy import degenerate_rate, distinct_k, first_words, is_degenerate, is_loop, is_soup

SOUP = "Ocean creatures include sharks, rays, dolphins, octopilabscapsulesExtractPhotos and more."
LOOP = "the cat sat " * 10
PROSE = ("It was a dark and stormy night; the rain fell in torrents, except at occasional intervals, when it was checked "
         "by a violent gust of wind which swept up the streets.")


def test_soup_and_loops_are_told_from_prose():
    assert is_soup(SOUP) and not is_loop(SOUP)
    assert is_loop(LOOP) and not is_soup(LOOP)
    assert not is_degenerate(PROSE)
    assert not is_soup("a" * 24) and is_soup("a" * 25)  # the threshold: 25 characters without whitespace
    assert not is_loop("yes yes yes")  # too short to judge
    assert degenerate_rate([SOUP, LOOP, PROSE, PROSE]) == 0.5
    assert np.isnan(degenerate_rate([]))


def test_distinct_k_counts_the_parts_of_the_greedy_partition():
    e = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])  # cosines to the first: 1, 0.8, 0, 0.6
    assert distinct_k(e) == 2  # {0, 1} then {2, 3}: 3 is 0.96 from 2
    assert distinct_k(e, threshold=0.99) == 4
    assert distinct_k(np.zeros((0, 2))) == 0


def test_first_words_share():
    assert first_words(["Paris is nice", "paris, of course", "Rome!", "  "]) == 2 / 3
    assert np.isnan(first_words(["", "..."]))
