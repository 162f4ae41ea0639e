"""Import stand-in for the CUDA-only ``sgl_kernel`` package, used on machines without a GPU.

SGLang's CPU engine imports a few ``*_cpu`` kernels from ``sgl_kernel`` at import time. They
ship only in CUDA builds, and the real package fails to import without libcuda. On a CPU
without Intel AMX none of them is ever called (the native torch paths run instead), so this
stand-in lets the imports succeed and raises a clear error if any of them is called.
See docs/cpu.md.
"""

_STAND_IN = True


def _missing(name):
    def stand_in(*args, **kwargs):
        raise RuntimeError(
            f"sgl_kernel.{name} was called, but this machine has only sglang-esamp's CPU import "
            "stand-in for the CUDA-only sgl_kernel package. This code path needs a GPU build of "
            "sgl_kernel (or an AMX-capable CPU build); see docs/cpu.md."
        )

    stand_in.__name__ = name
    return stand_in


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(name)
