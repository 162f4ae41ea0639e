"""SGLang plugin entry point (group ``sglang.srt.plugins``, name ``esamp``).

SGLang calls ``register()`` in every process it starts: the launcher, the engine, and each
spawned scheduler and detokenizer (forked ones, as ``sglang-esamp serve`` starts them on a
CPU, inherit it). That carries the CPU bootstrap and the hooks (listed in
``runtime/hooks.py``) into the scheduler process. The hooks act only when ESamp
is enabled (``--enable-esamp``); otherwise the server behaves as stock SGLang.
"""

from __future__ import annotations

from . import cpu


def register() -> None:
    cpu.setup()
    from ..runtime import hooks

    hooks.install()
