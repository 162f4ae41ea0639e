"""The tokens that end a word: a (V,) table of which token ids hold whitespace.

Token soup (``evaluation/degeneracy.py``) is a long run of characters without whitespace,
often word pieces strung together ("...ScrollAntiqueScissorsOnWheels..."). With
``--esamp-word-breaks hold`` the plausible form keeps the total probability of the tokens
that end the current word (their decoded text holds whitespace) apart from the rest's
(``core/tilt.py``, ``breaks``), so a word is as long as the model would make it. The table
is built once from the server's tokenizer; every TP rank builds the same one.

Usage::

    breaks = word_breaks(server_args, vocab, device)   # (V,) bool, or None without a tokenizer
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def table(pieces: list[str], device) -> torch.Tensor:
    """(V,) bool: ``pieces[i]``, the decoded text of token id i, holds whitespace."""
    return torch.tensor([any(ch.isspace() for ch in text) for text in pieces], dtype=torch.bool, device=device)


def word_breaks(server_args, vocab: int, device) -> torch.Tensor | None:
    """The table for the server's tokenizer over ``vocab`` ids (ids it lacks count as
    whitespace); None, with a warning, where the server loads no tokenizer."""
    if server_args.skip_tokenizer_init:
        logger.warning("ESamp: --esamp-word-breaks hold needs the tokenizer, which this server does not load; it is off")
        return None
    from sglang.srt.utils.hf_transformers_utils import get_tokenizer

    path = server_args.tokenizer_path or server_args.model_path
    try:
        tokenizer = get_tokenizer(path, tokenizer_mode=server_args.tokenizer_mode,
                                  trust_remote_code=server_args.trust_remote_code, revision=server_args.revision)
    except Exception as exc:  # the scheduler runs on without the rule
        logger.warning("ESamp: cannot load the tokenizer %s (%s); --esamp-word-breaks hold is off", path, exc)
        return None
    known = min(vocab, len(tokenizer))
    return table(tokenizer.batch_decode([[i] for i in range(known)]) + [" "] * (vocab - known), device)
