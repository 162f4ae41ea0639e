"""The per-request parameters ``explore``, ``explore_group`` and ``stratified``: validation
and transport.

Users send them beside ``temperature``: in ``sampling_params`` on ``/generate`` and in the
engine, and as top-level body fields on the OpenAI routes. SGLang's SamplingParams struct is
positional on the wire and has no room for new fields, so after validation both values ride
to the scheduler inside ``custom_params`` under one reserved key, which no client may send
itself (``check_custom_params``). The group key is made here, once per prompt, so the n
samples of one request carry the same key. The scheduler trusts nothing it receives:
``read_spec`` checks the carried spec again.

``stratified`` (a boolean) asks for stratified codes across the request's n samples
(``strata.py``); absent, it is on for an ESamp request (explore > 0) with n > 1. The spec
then carries ``strata: [call, n]``, ``call`` a fresh id per prompt of the call.

Group keys: ``r:<uuid>`` (a request's own group), ``g:<name>`` (a named group),
``t:<scope hash>:<name>`` (a named group scoped by ``--esamp-scope-header``), and
``p:<prompt hash>`` (made in the scheduler with ``--esamp-group-by prompt``).

Validation errors are ValueErrors, which SGLang turns into HTTP 400.

Usage::

    spec = parse_request(0.25, "my-group", cfg)   # {"explore": 0.25, "group": "g:my-group"}
    spec = parse_request(0.25, None, cfg, n=4)    # ... "strata": ["<call id>", 4]
"""

from __future__ import annotations

import hashlib
import math
import uuid

from ..core.config import ESampConfig

CUSTOM_KEY = "__esamp__"  # key inside SamplingParams.custom_params
SCOPE_KEY = "__esamp_scope__"  # key the server puts in a request's sampling params: its scope header's value
REQUEST_KEYS = ("explore", "explore_group", "stratified")  # the request fields, beside temperature
MAX_GROUP_LEN = 256
MAX_N = 1 << 16  # the largest n a stratified spec may carry
_SCOPE_HASH = 16  # hex digits of the scope's hash in a scoped key


def parse_request(explore, group, cfg: ESampConfig | None, scope: str | None = None, stratified=None, n: int = 1) -> dict | None:
    """Validate one request's values. Returns the spec to carry, or None for a plain request.
    ``scope``: the value of the server's ``--esamp-scope-header`` on this request, if any;
    ``n``: the request's number of samples."""
    if explore is None and group is None and stratified is None:
        return None
    beta, group, stratified = check_request(explore, group, cfg, stratified)
    if group is not None:
        if cfg is not None and cfg.scope_header and not scope:
            raise ValueError(f"explore_group needs the {cfg.scope_header} header on this server (--esamp-scope-header)")
    if cfg is None:
        return None  # explore == 0 on a plain server is plain sampling
    if group is None:
        key = f"r:{uuid.uuid4().hex}"
    elif cfg.scope_header:
        key = f"t:{hashlib.sha256(scope.encode()).hexdigest()[:_SCOPE_HASH]}:{group}"
    else:
        key = f"g:{group}"
    spec = {"explore": beta, "group": key}
    n = n if isinstance(n, int) and not isinstance(n, bool) else 1
    if (beta > 0 if stratified is None else stratified) and 1 < n <= MAX_N:
        spec["strata"] = [uuid.uuid4().hex, n]
    return spec


def check_request(explore, group, cfg: ESampConfig | None, stratified=None) -> tuple[float, str | None, bool | None]:
    """(beta, trimmed group, stratified) of valid request values; what the API routes check
    before anything else (the scope header is checked later, where the request's headers are known)."""
    beta = _check_explore(explore, cfg)
    if stratified is not None and not isinstance(stratified, bool):
        raise ValueError(f"stratified must be true or false; got {_show(stratified)}")
    if stratified and cfg is None:
        raise ValueError("stratified needs a server started with --enable-esamp")
    if group is None:
        return beta, None, stratified
    group = check_group(group)
    if cfg is not None and cfg.named_groups == "deny":
        raise ValueError("explore_group is turned off on this server (--esamp-named-groups deny)")
    return beta, group, stratified


def check_group(group) -> str:
    """A valid explore_group, without its surrounding whitespace: a string of printable
    characters (no control characters, no lone surrogates), 1 to 256 of them once trimmed."""
    if isinstance(group, str):
        name = group.strip()
        if 0 < len(name) <= MAX_GROUP_LEN and name.isprintable() and not any(0xD800 <= ord(c) <= 0xDFFF for c in name):
            return name
    raise ValueError(
        f"explore_group must be a non-empty string of at most {MAX_GROUP_LEN} printable characters (no control characters "
        f"or lone surrogates); got {_show(group)}"
    )


def check_custom_params(custom_params) -> None:
    """Clients may not send the keys ESamp reserves inside custom_params."""
    if isinstance(custom_params, dict):
        for key in (CUSTOM_KEY, SCOPE_KEY):
            if key in custom_params:
                raise ValueError(f"custom_params key {key!r} is reserved for ESamp; send explore and explore_group instead")


def read_spec(spec, cfg: ESampConfig) -> tuple[float, str, tuple[str, int] | None] | None:
    """(beta, group key, (call, n) or None) of a spec that arrived in the scheduler, or None
    if it is not one that ``parse_request`` makes."""
    if not isinstance(spec, dict) or set(spec) - {"strata"} != {"explore", "group"}:
        return None
    beta, key, strata = spec["explore"], spec["group"], spec.get("strata")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= cfg.max_explore:
        return None
    if not isinstance(key, str) or len(key) > 2 + _SCOPE_HASH + 1 + MAX_GROUP_LEN or key[:2] not in ("r:", "g:", "t:"):
        return None
    if strata is not None:
        if not (isinstance(strata, list) and len(strata) == 2 and isinstance(strata[0], str) and len(strata[0]) == 32
                and isinstance(strata[1], int) and not isinstance(strata[1], bool) and 1 < strata[1] <= MAX_N):
            return None
        strata = (strata[0], strata[1])
    return float(beta), key, strata


def with_scope(sampling_params, scope: str | None):
    """A request's sampling params (a dict, a list of them, or None) with the scope added."""
    if isinstance(sampling_params, list):
        return [dict(p or {}) | {SCOPE_KEY: scope} for p in sampling_params]
    return dict(sampling_params or {}) | {SCOPE_KEY: scope}


def _check_explore(explore, cfg: ESampConfig | None) -> float:
    if explore is None:
        return 0.0
    limit = cfg.max_explore if cfg is not None else math.inf
    try:
        value = float(explore) if not isinstance(explore, (bool, str)) and isinstance(explore, (int, float)) else math.nan
    except OverflowError:  # an integer beyond any float
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"explore must be a finite number in [0, {limit}]; got {_show(explore)}")
    if value < 0 or value > limit:
        raise ValueError(f"explore must be in [0, {limit}] (--esamp-max-explore); got {_show(explore)}")
    if value > 0 and cfg is None:
        raise ValueError(f"explore={value} needs a server started with --enable-esamp")
    return value


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def group_label(key: str) -> str:
    """The group id shown to users: the explore_group they sent, or the generated id."""
    return key[3 + _SCOPE_HASH :] if key.startswith("t:") else key[2:]
