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
client's own ``routed_dp_rank`` is kept. A batch request (a list of prompts) is routed as
one, by its first ESamp entry.
"""

from __future__ import annotations

import hashlib
import itertools

from ..core.config import ESampConfig
from .params import REQUEST_KEYS


def _stable(text: str, ranks: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big") % ranks


class DPRouter:
    def __init__(self, ranks: int, cfg: ESampConfig):
        self.ranks = ranks
        self.cfg = cfg
        self._turn = itertools.count()

    def dp_rank(self, obj, scope: str | None) -> int | None:
        """The rank for a GenerateReqInput, or None to leave it to SGLang."""
        params = obj.sampling_params
        entries = params if isinstance(params, list) else [params]
        spec = next((p for p in entries if isinstance(p, dict) and any(k in p for k in REQUEST_KEYS)), None)
        if spec is None:
            return None
        name = spec.get("explore_group")
        if isinstance(name, str) and name.strip():
            return _stable(f"{scope or ''}\n{name.strip()}", self.ranks)
        if self.cfg.group_by == "prompt":
            prompt = obj.text if obj.text is not None else obj.input_ids
            first = prompt[0] if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)) else prompt
            return _stable(repr(first), self.ranks)
        return next(self._turn) % self.ranks
