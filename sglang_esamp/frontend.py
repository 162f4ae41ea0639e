"""ESamp in SGLang's frontend language: ``sgl.gen(..., explore=beta, explore_group=...)``.

``import sglang_esamp`` installs it. The children of one ``s.fork(n)`` explore together: their
gens share one exploration group unless they name another. A nested fork is a new group.

Group convention for a gen with ``explore`` set:

- ``explore_group="name"``: that group, shared with every request naming it;
- ``explore_group=None`` (default): the innermost enclosing fork's group, or, outside any
  fork, a group of its own (its n samples when ``n > 1``);
- ``explore_group=False``: a private group, even inside a fork.

Run-level default: ``prog.run(..., explore=0.25)`` (or ``prog.run_batch``) applies to every gen that does not set
``explore`` itself, as ``temperature`` does.

Patched (all in this file, checked against the pinned sglang by tests/frontend):

| path | why |
| --- | --- |
| sglang.gen, sglang.lang.api.gen | accept explore / explore_group |
| SglSamplingParams.to_srt_kwargs | send them in ``sampling_params`` |
| SglSamplingParams.__init__ | the run-level default rides on the run's default params |
| StreamExecutor.__init__, .fork | run-level default; fork group ids |
| StreamExecutor._resolve_sampling_params | its hard-coded key list drops new keys |
| SglFunction.run, .run_batch | ``explore`` as a run-level default |
| RuntimeEndpoint.generate | ``gen(n>1)``: the server answers a list |

Usage::

    import sglang as sgl
    import sglang_esamp  # noqa: F401

    @sgl.function
    def attempts(s, question):
        s += question
        forks = s.fork(8)
        forks += sgl.gen("answer", max_tokens=64, explore=0.25)
"""

from __future__ import annotations

import functools
import math
import threading
import uuid

import sglang
import sglang.lang.api as lang_api
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.interpreter import StreamExecutor
from sglang.lang.ir import SglFunction, SglGen, SglSamplingParams

_run_defaults = threading.local()  # explore defaults of the prog.run call in progress
_original_gen = lang_api.gen


def _check(explore, explore_group) -> None:
    if explore is not None and (isinstance(explore, bool) or not isinstance(explore, (int, float)) or not math.isfinite(explore) or explore < 0):
        raise ValueError(f"gen(explore=...) must be a finite number >= 0; got {explore!r}")
    if explore_group is not None and explore_group is not False and (not isinstance(explore_group, str) or not explore_group):
        raise ValueError(f"gen(explore_group=...) must be a non-empty string, None or False; got {explore_group!r}")


@functools.wraps(_original_gen)
def gen(*args, explore: float | None = None, explore_group: str | bool | None = None, **kwargs):
    """``sgl.gen`` with ``explore`` (beta, >= 0) and ``explore_group`` (see the module doc)."""
    _check(explore, explore_group)
    expr = _original_gen(*args, **kwargs)
    if isinstance(expr, SglGen):  # gen(choices=...) is a select: nothing to explore
        expr.sampling_params.explore = explore
        expr.sampling_params.explore_group = explore_group
    return expr


def _to_srt_kwargs(original, params: SglSamplingParams) -> dict:
    out = original(params)
    explore = getattr(params, "explore", None)
    if explore is not None:
        out["explore"] = explore
        if getattr(params, "explore_group", None):
            out["explore_group"] = params.explore_group
    return out


def _params_init(original, params: SglSamplingParams, *args, **kwargs) -> None:
    original(params, *args, **kwargs)
    params.esamp_defaults = getattr(_run_defaults, "value", {})  # set while prog.run/run_batch builds its defaults


def _executor_init(original, exe: StreamExecutor, *args, **kwargs) -> None:
    exe.esamp_fork_group = None
    original(exe, *args, **kwargs)
    # run_batch builds executors in pool threads: the defaults ride on the run's default params
    exe.esamp_defaults = getattr(exe.default_sampling_para, "esamp_defaults", {})


def _fork(original, exe: StreamExecutor, *args, **kwargs):
    children = original(exe, *args, **kwargs)
    group = uuid.uuid4().hex
    for child in children:
        child.esamp_defaults = exe.esamp_defaults
        child.esamp_fork_group = group
    return children


def _resolve_sampling_params(original, exe: StreamExecutor, sampling_params):
    out = original(exe, sampling_params)
    explore = getattr(sampling_params, "explore", None)
    group = getattr(sampling_params, "explore_group", None)
    if explore is None:
        explore = exe.esamp_defaults.get("explore")
        group = exe.esamp_defaults.get("explore_group") if group is None else group
    out.explore = explore
    if group is False:
        out.explore_group = None  # private: the server makes a fresh group
    else:
        out.explore_group = group or exe.esamp_fork_group
    return out


def _run(original, fn: SglFunction, *args, explore: float | None = None, explore_group: str | None = None, **kwargs):
    _check(explore, explore_group)
    _run_defaults.value = {"explore": explore, "explore_group": explore_group}
    try:
        return original(fn, *args, **kwargs)
    finally:
        _run_defaults.value = {}


_run_batch = _run


def _endpoint_generate(original, endpoint: RuntimeEndpoint, s, sampling_params):
    """With n > 1 the server answers a list; give the interpreter texts and metas per sample."""
    if getattr(sampling_params, "n", 1) <= 1:
        return original(endpoint, s, sampling_params)
    from sglang.lang.backend.runtime_endpoint import http_request

    data = {"text": s.text_, "sampling_params": sampling_params.to_srt_kwargs()}
    res = http_request(endpoint.base_url + "/generate", json=data, api_key=endpoint.api_key, verify=endpoint.verify)
    endpoint._assert_success(res)
    outs = res.json()
    return [o["text"] for o in outs], [o["meta_info"] for o in outs]


def _wrap(owner, name: str, hook) -> None:
    original = getattr(owner, name)
    if getattr(original, "_esamp_patched", False):
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        return hook(original, *args, **kwargs)

    wrapper._esamp_patched = True
    setattr(owner, name, wrapper)


def install() -> None:
    """Patch SGLang's frontend (idempotent)."""
    sglang.gen = lang_api.gen = gen
    _wrap(SglSamplingParams, "to_srt_kwargs", _to_srt_kwargs)
    _wrap(SglSamplingParams, "__init__", _params_init)
    _wrap(StreamExecutor, "__init__", _executor_init)
    _wrap(StreamExecutor, "fork", _fork)
    _wrap(StreamExecutor, "_resolve_sampling_params", _resolve_sampling_params)
    _wrap(SglFunction, "run", _run)
    _wrap(SglFunction, "run_batch", _run_batch)
    _wrap(RuntimeEndpoint, "generate", _endpoint_generate)
