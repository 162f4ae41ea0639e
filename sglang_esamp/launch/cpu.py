"""CPU bootstrap: what the real SGLang runtime needs to start on a machine without a GPU.

SGLang 0.5.23 has no CPU extra. On a machine without CUDA this module:

- sets ``SGLANG_USE_CPU_ENGINE=1`` (otherwise rotary embedding tries to import vllm) and a
  bounded ``OMP_NUM_THREADS`` (unset, runs were far slower);
- puts an import stand-in for the CUDA-only ``sgl_kernel`` in front of ``sys.path`` and on
  ``PYTHONPATH``, so it also reaches the scheduler process that SGLang spawns;
- with several ranks (data or tensor parallel), gives each its share of the cores
  (``SGLANG_CPU_OMP_THREADS_BIND``), which SGLang's CPU engine requires beyond one rank per
  NUMA node;
- supplies the server arguments that work there: CPU device, torch_native attention, the
  pytorch sampler, no CUDA graph, a bounded KV cache, no warm-up, ``sleep_on_idle`` (an
  idle scheduler otherwise busy-polls a whole core, which halves a 2-core machine), and
  float32 weights on a CPU without native bf16 (there bf16 matmuls are emulated and slower).

On a CUDA machine every function here is a no-op. Why each piece exists, with the
measurements behind each choice: docs/cpu.md.

Usage::

    from sglang_esamp.launch import cpu
    cpu.setup()                               # before sglang is imported
    kwargs = cpu.server_defaults()            # {} on CUDA
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

STAND_IN_DIR = Path(__file__).resolve().parent.parent / "_stand_ins"
CPU_MAX_TOTAL_TOKENS = 40000  # else SGLang sizes a ~6 GB KV cache from free memory


@functools.cache
def has_native_bf16() -> bool:
    """True when the CPU advertises bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def setup() -> bool:
    """Prepare this process and its future children for the CPU engine. Returns True on CPU."""
    if has_cuda():
        return False
    os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))
    stand_in = str(STAND_IN_DIR)
    if stand_in not in sys.path:
        sys.path.insert(0, stand_in)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if stand_in not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([stand_in, *paths])
    loaded = sys.modules.get("sgl_kernel")
    if loaded is not None and not getattr(loaded, "_STAND_IN", False):
        del sys.modules["sgl_kernel"]  # a failed import of the real one must not stick
    return True


def server_defaults() -> dict[str, object]:
    """ServerArgs fields for the CPU engine; empty on a CUDA machine."""
    if has_cuda():
        return {}
    defaults = {
        "device": "cpu",
        "attention_backend": "torch_native",
        "sampling_backend": "pytorch",
        "disable_cuda_graph": True,
        "max_total_tokens": CPU_MAX_TOTAL_TOKENS,
        "skip_server_warmup": True,
        "sleep_on_idle": True,
    }
    if not has_native_bf16():
        defaults["dtype"] = "float32"
    return defaults


def _flag_int(argv: list[str], names: tuple[str, ...]) -> int:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return int(argv[i + 1])
            if arg.startswith(name + "="):
                return int(arg.split("=", 1)[1])
    return 1


def bind_ranks(argv: list[str]) -> str | None:
    """With more than one rank (``--dp-size`` x ``--tp-size`` x ``--pp-size``) SGLang's CPU
    engine needs ``SGLANG_CPU_OMP_THREADS_BIND`` unless there is a NUMA node per rank: give
    each rank an equal share of this process's cores (``0|1`` for 2 ranks on 2 cores; ranks
    share cores when there are more ranks than cores). A value the user set is kept. Returns
    the value set, if any; a no-op on CUDA."""
    if has_cuda() or os.environ.get("SGLANG_CPU_OMP_THREADS_BIND"):
        return None
    ranks = 1
    for names in (("--dp-size", "--dp"), ("--tp-size", "--tp"), ("--pp-size",)):
        ranks *= _flag_int(argv, names)
    if ranks <= 1:
        return None
    cores = sorted(os.sched_getaffinity(0))
    per = max(1, len(cores) // ranks)
    shares = [cores[(r * per) % len(cores):][:per] for r in range(ranks)]
    value = "|".join(f"{s[0]}-{s[-1]}" if len(s) > 1 else str(s[0]) for s in shares)
    os.environ["SGLANG_CPU_OMP_THREADS_BIND"] = value
    return value


def cli_defaults(argv: list[str]) -> list[str]:
    """The same defaults as launch_server flags, for those ``argv`` does not already set."""
    out = []
    for key, value in server_defaults().items():
        flag = "--" + key.replace("_", "-")
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            continue
        out += [flag] if value is True else [flag, str(value)]
    return out
