"""Run generated code in a sandbox: a child process with time and memory limits, no
network and a fresh temporary folder.

Layers, each independent of the others:

- a new process session, killed as a group at the wall-clock limit;
- rlimits: address space (``memory_mb``), CPU seconds, file size, no core dumps;
- ``python -I`` (no user site, no PYTHON* variables) in an empty temporary folder, with a
  minimal environment;
- no network: a network namespace of its own (``unshare -rn``) where the kernel allows it,
  and always a guard that makes ``socket.socket`` raise before the candidate's code runs.

This guards a test harness against buggy or runaway code from a small model; it is not a
security boundary against hostile code.

Usage::

    result = run_python(program_text, timeout=5.0)
    result.passed, result.reason
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_GUARD = """\
import socket as _s
def _no_network(*a, **k):
    raise OSError("network access is disabled in the sandbox")
_s.socket = _no_network
_s.create_connection = _no_network
del _s
"""


@dataclass(frozen=True)
class RunResult:
    passed: bool
    reason: str  # "passed", "timed out", "failed: <last line of stderr>"


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """``unshare -rn`` when it works here, else nothing (the socket guard still applies)."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    try:
        ok = subprocess.run([exe, "-rn", sys.executable, "-c", "pass"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return (exe, "-rn") if ok else ()


def _limits(memory_mb: int, cpu_s: int):
    def apply() -> None:
        os.setsid()
        mem = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 2**20, 16 * 2**20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(code: str, timeout: float = 10.0, memory_mb: int = 1024) -> RunResult:
    """Run ``code`` as a Python program in the sandbox; it passes when it exits with 0."""
    with tempfile.TemporaryDirectory(prefix="esamp-sandbox-") as work:
        path = os.path.join(work, "candidate.py")
        with open(path, "w") as f:
            f.write(_GUARD + code)
        cmd = [*_unshare_prefix(), sys.executable, "-I", path]
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_limits(memory_mb, int(timeout) + 1),
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return RunResult(False, "timed out")
    if proc.returncode == 0:
        return RunResult(True, "passed")
    lines = err.decode(errors="replace").strip().splitlines()
    return RunResult(False, "failed: " + (lines[-1] if lines else f"exit code {proc.returncode}"))


def check_humaneval(completion: str, meta: dict, timeout: float = 10.0) -> RunResult:
    """HumanEval: the prompt, the model's completion, the task's tests, then ``check(entry)``."""
    program = f"{meta['prompt']}{completion}\n\n{meta['test']}\n\ncheck({meta['entry_point']})\n"
    return run_python(program, timeout=timeout)
