"""sglang-esamp: Exploratory Sampling for SGLang.

Parallel samples of one prompt share an online-trained distiller that predicts the model's
deep hidden state from a shallow one; each token's logit is tilted away from what the
distiller already predicts, so the samples spread over different continuations.

Importing the package changes nothing else and imports no sglang. It arranges that SGLang's
frontend learns ``sgl.gen(..., explore=beta)`` as soon as ``sglang`` is imported, before or
after this package (``lang/frontend.py``).

Usage::

    import sglang as sgl
    import sglang_esamp
    sgl.gen("answer", max_tokens=64, explore=1.0)
    cfg = sglang_esamp.ESampConfig(max_groups=16)

Layers, each importing only those before it: ``core`` (the method, pure torch) <- ``runtime``
(inside SGLang's scheduler) <- ``launch`` (CPU bootstrap, model cache, server, engine) and
``lang`` (the frontend) <- ``evaluation`` and ``tools`` <- ``cli``. See docs/design.md.
"""

from __future__ import annotations

from .core.config import ESampConfig

__all__ = ["ESampConfig", "gen"]
__version__ = "0.1.0"


def _install_frontend(_sglang) -> None:
    from .lang import frontend

    frontend.install()


def _on_sglang_import() -> None:
    try:
        import wrapt
    except ImportError:  # a bare torch machine (the GPU checks): no frontend to teach
        return
    wrapt.register_post_import_hook(_install_frontend, "sglang")  # runs at once if sglang is already imported


def __getattr__(name: str):
    if name == "gen":  # the patched sgl.gen
        import sglang

        return sglang.gen
    raise AttributeError(f"module 'sglang_esamp' has no attribute {name!r}")


_on_sglang_import()
