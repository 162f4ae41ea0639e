"""The per-request parameters ``explore`` and ``explore_group``: validation and transport.

Users send them beside ``temperature``: in ``sampling_params`` on ``/generate`` and in the
engine, and as top-level body fields on the OpenAI routes. SGLang's SamplingParams struct is
positional on the wire and has no room for new fields, so after validation both values ride
to the scheduler inside ``custom_params`` under one reserved key. The group key is made
here, once per prompt, so the n samples of one request carry the same key.

Validation errors are ValueErrors, which SGLang turns into HTTP 400.

Usage::

    spec = parse_request(0.25, "my-group", cfg)   # {"explore": 0.25, "group": "g:my-group"}
"""

from __future__ import annotations

import math
import uuid

from ..core.config import ESampConfig

CUSTOM_KEY = "__esamp__"  # key inside SamplingParams.custom_params
REQUEST_KEYS = ("explore", "explore_group")  # the request fields, beside temperature
MAX_GROUP_LEN = 256


def parse_request(explore, group, cfg: ESampConfig | None) -> dict | None:
    """Validate one request's values. Returns the spec to carry, or None for a plain request."""
    if explore is None and group is None:
        return None
    beta = _check_explore(explore, cfg)
    if group is not None and (not isinstance(group, str) or not group or len(group) > MAX_GROUP_LEN):
        raise ValueError(f"explore_group must be a non-empty string of at most {MAX_GROUP_LEN} characters; got {_show(group)}")
    if cfg is None:
        return None  # explore == 0 on a plain server is plain sampling
    key = f"g:{group}" if group is not None else f"r:{uuid.uuid4().hex}"
    return {"explore": beta, "group": key}


def _check_explore(explore, cfg: ESampConfig | None) -> float:
    if explore is None:
        return 0.0
    limit = cfg.max_explore if cfg is not None else math.inf
    if isinstance(explore, bool) or not isinstance(explore, (int, float)) or not math.isfinite(explore):
        raise ValueError(f"explore must be a finite number in [0, {limit}]; got {_show(explore)}")
    if explore < 0 or explore > limit:
        raise ValueError(f"explore must be in [0, {limit}] (--esamp-max-explore); got {explore}")
    if explore > 0 and cfg is None:
        raise ValueError(f"explore={explore} needs a server started with --enable-esamp")
    return float(explore)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def group_label(key: str) -> str:
    """The group id shown to users: the explore_group they sent, or the generated id."""
    return key[2:]
