"""SGLang plugin entry point (group ``sglang.srt.plugins``, name ``esamp``).

SGLang calls ``register()`` in every process it starts: the launcher, the engine, the
spawned scheduler and the detokenizer. That is what carries the CPU bootstrap into the
scheduler process.
"""

from __future__ import annotations

from .. import cpu


def register() -> None:
    cpu.setup()
