"""Every SGLang path the plugin and the frontend hook must exist in the pinned sglang."""

import inspect
import pkgutil

import pytest
import sglang

from sglang_esamp.lang import frontend
from sglang_esamp.runtime import hooks


def test_pinned_sglang_version():
    assert sglang.__version__ == "0.5.23"


@pytest.mark.parametrize("target", [t for t, _, _ in hooks.HOOKS])
def test_hooked_path_resolves(target):
    obj = pkgutil.resolve_name(target)
    assert callable(obj), target


def positional(fn) -> tuple[list[str], bool]:
    """(the names of a function's positional parameters, whether it takes *args)."""
    params = inspect.signature(inspect.unwrap(fn)).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)], any(
        p.kind == p.VAR_POSITIONAL for p in params)


@pytest.mark.parametrize("target, fn, kind", hooks.HOOKS, ids=[t for t, _, _ in hooks.HOOKS])
def test_every_hook_takes_the_wrapped_functions_arguments(target, fn, kind):
    """hooks.py's argument order: AFTER gets the result, AROUND the original, then the wrapped
    call's own arguments in its order (``self`` under a name of the hook's choosing); BEFORE
    only those. A hook names all of them, or the first few and takes the rest as *args."""
    from sglang.srt.plugins.hook_registry import HookType

    owner, _, name = target.rpartition(".")
    owner = pkgutil.resolve_name(owner)
    wrapped = inspect.getattr_static(owner, name) if isinstance(owner, type) else getattr(owner, name)
    wrapped, _ = positional(getattr(wrapped, "__func__", wrapped))  # a classmethod's or staticmethod's function
    named, rest = positional(fn)
    own = named[kind is not HookType.BEFORE:]  # without the result or the original
    assert len(own) == len(wrapped) or (rest and len(own) < len(wrapped)), (own, wrapped)
    for mine, theirs in zip(own, wrapped):
        assert mine == theirs or (theirs == "self" and mine not in wrapped), (own, wrapped)


def test_hook_arities_match_the_wrapped_functions():
    """Hooks that spell out SGLang's parameters must track its signature."""
    from sglang.srt.layers.logits_processor import LogitsProcessor

    original = inspect.unwrap(LogitsProcessor._get_hidden_states_to_store)
    params = list(inspect.signature(original).parameters)[1:]  # without self
    assert params == list(inspect.signature(hooks.hidden_states_to_store).parameters)[2:]
    from sglang.srt.model_executor.model_runner import ModelRunner

    assert list(inspect.signature(inspect.unwrap(ModelRunner.forward)).parameters)[1] == "forward_batch"
    assert list(inspect.signature(inspect.unwrap(LogitsProcessor._get_logits)).parameters)[1] == "hidden_states"


def test_openai_requests_keep_extra_fields():
    from sglang.srt.entrypoints.openai.protocol import CompletionRequest

    hooks.allow_openai_extras()
    req = CompletionRequest(model="m", prompt="hi", explore=0.5, explore_group="g")
    assert req.model_extra == {"explore": 0.5, "explore_group": "g"}


@pytest.mark.parametrize("target", [t for t, _, _ in frontend.HOOKS])
def test_frontend_hooked_path_resolves(target):
    assert callable(pkgutil.resolve_name(target)), target
