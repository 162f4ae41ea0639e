"""How SGLang's launcher starts its child processes on a CPU: forked, not spawned.

SGLang forces the "spawn" start method, because a CUDA context does not survive a fork. A
spawned scheduler or detokenizer is a fresh interpreter that imports SGLang again: about
12 s of a 33 s server start on 2 cores. Without CUDA there is no such context, and a fork
copies the launcher's imports for free.

Only a fresh launcher asks for it, through ``FORK_ENV`` (``sglang-esamp serve`` sets it on a
CPU; "0" there keeps spawn): an in-process engine's host may already have run OpenMP
threads, which a fork does not copy.
"""

from __future__ import annotations

import multiprocessing
import os

FORK_ENV = "SGLANG_ESAMP_CPU_FORK"


def fork_children(device: str) -> bool:
    """Switch this process to the "fork" start method when ``device`` is the CPU and
    ``FORK_ENV`` is "1". Returns True when it switched."""
    if device != "cpu" or os.environ.get(FORK_ENV) != "1":
        return False
    multiprocessing.set_start_method("fork", force=True)
    return True
