"""ESamp in SGLang's frontend language: ``sgl.gen(..., explore=beta, explore_group=...)``.

``import sglang_esamp`` installs it as soon as ``sglang`` is imported (before or after). The
children of one ``s.fork(n)`` explore together: their gens share one exploration group
unless they name another. A nested fork is a new group.

Group convention for a gen with ``explore`` set:

- ``explore_group="name"``: that group, shared with every request naming it;
- ``explore_group=None`` (default): the innermost enclosing fork's group, or, outside any
  fork, a group of its own (its n samples when ``n > 1``);
- ``explore_group=False``: a private group, even inside a fork.

Run-level default: ``prog.run(..., explore=1.0)`` (or ``prog.run_batch``) applies to every
gen that does not set ``explore`` itself, as ``temperature`` does.

Hooked through SGLang's ``HookRegistry``, like the runtime (checked against the pinned
sglang by tests/frontend):

| path | type | why |
| --- | --- | --- |
| sglang.lang.api.gen (and ``sglang.gen``) | AROUND | accept explore / explore_group |
| SglSamplingParams.to_srt_kwargs | AFTER | send them in ``sampling_params`` |
| SglSamplingParams.__init__ | AFTER | the run-level default rides on the run's default params |
| StreamExecutor.__init__ | AROUND | run-level default; no fork group yet |
| StreamExecutor.fork | AFTER | the children's fork group |
| StreamExecutor._resolve_sampling_params | AFTER | its hard-coded key list drops new keys |
| SglFunction.run, .run_batch | AROUND | ``explore`` as a run-level default |
| RuntimeEndpoint.generate | AROUND | ``gen(n>1)``: the server answers a list |
| RuntimeEndpoint.generate_stream | AROUND | ``gen(n>1)`` with streaming is refused (it would splice the samples) |

Usage::

    import sglang as sgl
    import sglang_esamp  # noqa: F401

    @sgl.function
    def attempts(s, question):
        s += question
        forks = s.fork(8)
        forks += sgl.gen("answer", max_tokens=64, explore=1.0)
"""

from __future__ import annotations

import math
import threading
import uuid

from sglang.lang.ir import SglGen
from sglang.srt.plugins.hook_registry import HookRegistry, HookType

_run_defaults = threading.local()  # explore defaults of the prog.run call in progress
_installed = False


def _check(explore, explore_group) -> None:
    if explore is not None and (
        isinstance(explore, bool) or not isinstance(explore, (int, float)) or not math.isfinite(explore) or explore < 0
    ):
        raise ValueError(f"gen(explore=...) must be a finite number >= 0; got {explore!r}")
    if explore_group is not None and explore_group is not False and (not isinstance(explore_group, str) or not explore_group):
        raise ValueError(f"gen(explore_group=...) must be a non-empty string, None or False; got {explore_group!r}")


def gen(original, *args, explore: float | None = None, explore_group: str | bool | None = None, **kwargs):
    """``sgl.gen`` with ``explore`` (beta, >= 0) and ``explore_group`` (see the module doc)."""
    _check(explore, explore_group)
    expr = original(*args, **kwargs)
    if isinstance(expr, SglGen):  # gen(choices=...) is a select: nothing to explore
        expr.sampling_params.explore = explore
        expr.sampling_params.explore_group = explore_group
    return expr


def to_srt_kwargs(out: dict, params) -> dict:
    explore = getattr(params, "explore", None)
    if explore is not None:
        out["explore"] = explore
        if getattr(params, "explore_group", None):
            out["explore_group"] = params.explore_group
    return out


def params_init(result, params, *args, **kwargs) -> None:
    params.esamp_defaults = getattr(_run_defaults, "value", {})  # set while prog.run/run_batch builds its defaults


def executor_init(original, exe, *args, **kwargs) -> None:
    exe.esamp_fork_group = None
    original(exe, *args, **kwargs)
    # run_batch builds executors in pool threads: the defaults ride on the run's default params
    exe.esamp_defaults = getattr(exe.default_sampling_para, "esamp_defaults", {})


def fork(children, exe, *args, **kwargs):
    group = uuid.uuid4().hex
    for child in children:
        child.esamp_defaults = exe.esamp_defaults
        child.esamp_fork_group = group
    return children


def resolve_sampling_params(out, exe, sampling_params):
    explore = getattr(sampling_params, "explore", None)
    group = getattr(sampling_params, "explore_group", None)
    if explore is None:
        explore = exe.esamp_defaults.get("explore")
        group = exe.esamp_defaults.get("explore_group") if group is None else group
    out.explore = explore
    out.explore_group = None if group is False else group or exe.esamp_fork_group  # None: the server makes a fresh group
    return out


def run(original, fn, *args, explore: float | None = None, explore_group: str | None = None, **kwargs):
    _check(explore, explore_group)
    _run_defaults.value = {"explore": explore, "explore_group": explore_group}
    try:
        return original(fn, *args, **kwargs)
    finally:
        _run_defaults.value = {}


def endpoint_generate(original, endpoint, s, sampling_params):
    """With n > 1 the server answers a list; give the interpreter texts and metas per sample."""
    if getattr(sampling_params, "n", 1) <= 1:
        return original(endpoint, s, sampling_params)
    from sglang.lang.backend.runtime_endpoint import http_request

    data = {"text": s.text_, "sampling_params": sampling_params.to_srt_kwargs()}
    res = http_request(endpoint.base_url + "/generate", json=data, api_key=endpoint.api_key, verify=endpoint.verify)
    endpoint._assert_success(res)
    outs = res.json()
    return [o["text"] for o in outs], [o["meta_info"] for o in outs]


def endpoint_generate_stream(original, endpoint, s, sampling_params):
    """The stock stream reader follows one text, so n > 1 samples would be spliced into it."""
    if getattr(sampling_params, "n", 1) > 1:
        raise ValueError(f"gen(n={sampling_params.n}) cannot stream: run the program without stream=True, or use n=1 "
                         "inside s.fork(n) to stream each sample")
    return original(endpoint, s, sampling_params)


L = "sglang.lang."
HOOKS = [
    (L + "api.gen", gen, HookType.AROUND),
    (L + "ir.SglSamplingParams.to_srt_kwargs", to_srt_kwargs, HookType.AFTER),
    (L + "ir.SglSamplingParams.__init__", params_init, HookType.AFTER),
    (L + "interpreter.StreamExecutor.__init__", executor_init, HookType.AROUND),
    (L + "interpreter.StreamExecutor.fork", fork, HookType.AFTER),
    (L + "interpreter.StreamExecutor._resolve_sampling_params", resolve_sampling_params, HookType.AFTER),
    (L + "ir.SglFunction.run", run, HookType.AROUND),
    (L + "ir.SglFunction.run_batch", run, HookType.AROUND),
    (L + "backend.runtime_endpoint.RuntimeEndpoint.generate", endpoint_generate, HookType.AROUND),
    (L + "backend.runtime_endpoint.RuntimeEndpoint.generate_stream", endpoint_generate_stream, HookType.AROUND),
]


def install() -> None:
    """Register and apply the frontend hooks (once per process). ``HookRegistry`` also
    rebinds names imported from the hooked modules, such as ``sglang.gen``."""
    global _installed
    if _installed:
        return
    _installed = True
    for target, fn, kind in HOOKS:
        HookRegistry.register(target, fn, kind)
    HookRegistry.apply_hooks()
