"""Data parallelism: every request of one exploration group goes to one DP rank.

With ``--dp-size N`` SGLang's tokenizer expands a request with ``n > 1`` into n requests,
and its data-parallel controller places each on its own (round robin by default), which
would split a group over replicas that each train their own distiller. SGLang routes a
request to a chosen rank when it carries ``routed_dp_rank``; ``dp_rank`` picks one for an
ESamp request that has none, before the expansion, so its n copies inherit it:

- a named group (``explore_group``, with the scope header's value when
  ``--esamp-scope-header`` is set): a stable hash of the name, so every request naming it
  meets its group on the same rank, from any client and across calls;
- with ``--esamp-group-by prompt`` and no name: a stable hash of the prompt;
- otherwise (the request is its own group): the ranks in turn, so such groups spread evenly.

A request without ``explore`` or ``explore_group`` keeps SGLang's own balancing, and a
client's own ``routed_dp_rank`` is kept. The rank is chosen per prompt once its token ids
are known (``hooks.tokenized_request``): each entry of a batch request by its own group, and
a prompt sent as text meets the same prompt sent as token ids (the scheduler groups them by
their ids too).
"""

from __future__ import annotations

import hashlib
import itertools

from ..core.config import ESampConfig
from .params import REQUEST_KEYS, SCOPE_KEY


def _stable(text: str, ranks: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big") % ranks


class DPRouter:
    def __init__(self, ranks: int, cfg: ESampConfig):
        self.ranks = ranks
        self.cfg = cfg
        self._turn = itertools.count()

    def dp_rank(self, params, input_ids) -> int | None:
        """The rank for one prompt's sampling params (a dict, the scope under ``SCOPE_KEY``) and
        its token ids, or None to leave it to SGLang."""
        if not isinstance(params, dict) or not any(k in params for k in REQUEST_KEYS):
            return None
        name = params.get("explore_group")
        if isinstance(name, str) and name.strip():
            return _stable(f"{params.get(SCOPE_KEY) or ''}\n{name.strip()}", self.ranks)
        if self.cfg.group_by == "prompt":
            return _stable(repr(list(input_ids or [])), self.ranks)
        return next(self._turn) % self.ranks
