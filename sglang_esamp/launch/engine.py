"""An in-process SGLang engine with the project's defaults.

``make_engine`` is ``sglang.Engine`` with the embedded model when no ``model_path`` is given,
the CPU setup applied when there is no GPU, and ESamp on when ``esamp`` is given (an
ESampConfig, or True for the defaults). Call it under ``if __name__ == "__main__":``
in scripts: SGLang spawns its scheduler. Note that SGLang's ``Engine.shutdown()`` kills every
child process of the caller, servers started with ``ServerProcess`` included.

Usage::

    engine = make_engine(esamp=True)
    engine.generate("Hello", {"max_new_tokens": 8, "n": 4, "explore": 0.25})
    engine.shutdown()
"""

from __future__ import annotations

from ..core.config import ESampConfig
from ..runtime import flags
from . import cpu
from .model_cache import embedded_model_path


def make_engine(esamp: ESampConfig | bool | None = None, **kwargs):
    cpu.setup()
    cfg = ESampConfig() if esamp is True else esamp or None
    flags.export(cfg)
    flags.sync_tp_tokens(kwargs.get("tp_size", 1), cfg)
    import sglang as sgl

    kwargs.setdefault("model_path", str(embedded_model_path()))
    kwargs.setdefault("log_level", "warning")
    return sgl.Engine(**(cpu.server_defaults() | kwargs))
