"""An in-process SGLang engine with the project's defaults.

``make_engine`` is ``sglang.Engine`` with the embedded model when no ``model_path`` is given
and the CPU setup applied when there is no GPU. Call it under ``if __name__ == "__main__":``
in scripts: SGLang spawns its scheduler.

Usage::

    engine = make_engine()
    engine.generate("Hello", {"max_new_tokens": 8})
    engine.shutdown()
"""

from __future__ import annotations

from . import cpu
from .model_cache import embedded_model_path


def make_engine(**kwargs):
    cpu.setup()
    import sglang as sgl

    kwargs.setdefault("model_path", str(embedded_model_path()))
    kwargs.setdefault("log_level", "warning")
    return sgl.Engine(**(cpu.server_defaults() | kwargs))
