"""Run generated code in a sandbox: a child process with time, memory, output and process
limits, no network, nothing writable but a fresh temporary folder, and a guaranteed end.

Layers, each independent of the others:

- namespaces (``unshare``, where the kernel allows it): user, network (no interface but
  loopback), PID (the candidate is PID 1 of its own namespace: when it ends, or when the
  sandbox kills it, every process it started dies with it, a daemonised one included) and
  mount (every filesystem read-only except the candidate's folder; ``jail.py``);
- a pids cgroup capping the number of processes, where one can be made; ``RLIMIT_NPROC``
  otherwise, which the kernel does not enforce for root;
- rlimits: address space (``memory_mb``), CPU seconds, file size, no core dumps;
- ``python -I`` (no user site, no PYTHON* variables) in an empty temporary folder, with a
  minimal environment, stdout discarded and stderr to a file read back at most
  ``MAX_OUTPUT`` bytes (no pipe a runaway child could fill or hold open);
- a guard that makes ``socket.socket`` raise before the candidate's code runs.

Every wait is bounded. A missing primitive is logged as a warning the first time, naming
what the sandbox then cannot stop; it is never a silent downgrade.

This guards a test harness against buggy or runaway code from a small model; it is not a
security boundary against hostile code.

Usage::

    result = run_python(program_text, timeout=5.0)
    result.passed, result.reason
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_OUTPUT = 4096  # bytes of stderr read back
MAX_PROCS = 32  # processes (threads count too) the candidate may run at once
JAIL = Path(__file__).with_name("jail.py")
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
def _namespaces() -> tuple[str, ...]:
    """The ``unshare`` prefix of the namespaces, or () with a warning where they do not work."""
    exe = shutil.which("unshare")
    cmd = (exe, "-r", "-n", "-p", "-f", "-m", "--kill-child", "--mount-proc") if exe else ()
    try:
        ok = bool(cmd) and subprocess.run([*cmd, sys.executable, "-c", "pass"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        logger.warning("sandbox: no user/network/PID/mount namespaces here (unshare %s); generated code runs with the "
                       "filesystem writable, network access stopped only by a socket guard that `import _socket` passes, "
                       "and its descendants killed by process group only", "is missing" if not exe else "failed")
    return cmd if ok else ()


@functools.cache
def _cgroup_root() -> Path | None:
    """A writable pids cgroup hierarchy (v1 or v2), or None with a warning if there is none and
    RLIMIT_NPROC cannot cap a root user."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        for stale in root.glob("esamp-sandbox-*"):  # left by a killed harness; only empty ones can go
            try:
                stale.rmdir()
            except OSError:
                pass
        probe = root / f"esamp-probe-{uuid.uuid4().hex[:8]}"
        try:
            probe.mkdir()
            ok = (probe / "pids.max").exists()
            probe.rmdir()
        except OSError:
            continue
        if ok:
            return root
    if os.geteuid() == 0:
        logger.warning("sandbox: no writable pids cgroup and running as root, where RLIMIT_NPROC does not apply: "
                       "the number of processes generated code starts is not capped")
    return None


class _Cgroup:
    """A pids cgroup for one run, joined by the child before it execs."""

    def __init__(self, max_procs: int):
        root = _cgroup_root()
        self.path = None if root is None else root / f"esamp-sandbox-{uuid.uuid4().hex}"
        if self.path is not None:
            try:
                self.path.mkdir()
                (self.path / "pids.max").write_text(str(max_procs))
            except OSError:
                self.path = None

    def join(self) -> None:  # in the child, before exec
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        """Kill what is left in the group and remove it once empty (bounded wait)."""
        if self.path is None:
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                pids = (self.path / "cgroup.procs").read_text().split()
                for pid in pids:
                    os.kill(int(pid), signal.SIGKILL)
                if not pids:
                    self.path.rmdir()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        logger.warning("sandbox: cgroup %s still had processes 5 s after SIGKILL; left in place", self.path)


def _child_setup(cgroup: _Cgroup):
    def apply() -> None:
        os.setsid()
        cgroup.join()

    return apply


def run_python(code: str, timeout: float = 10.0, memory_mb: int = 1024) -> RunResult:
    """Run ``code`` as a Python program in the sandbox; it passes when it exits with 0."""
    with tempfile.TemporaryDirectory(prefix="esamp-sandbox-") as root:
        work = os.path.join(root, "run")
        os.mkdir(work)
        path = os.path.join(work, "candidate.py")
        with open(path, "w") as f:
            f.write(_GUARD + code)
        cgroup = _Cgroup(MAX_PROCS)
        limits = [str(memory_mb), str(int(timeout) + 1), str(0 if cgroup.path is not None or os.geteuid() == 0 else MAX_PROCS)]
        prefix = _namespaces()
        if prefix:
            cmd = [*prefix, sys.executable, "-I", str(JAIL), work, *limits, path]
        else:
            cmd = [sys.executable, "-I", str(JAIL), "--no-mounts", work, *limits, path]
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        with open(os.path.join(root, "stderr"), "wb") as err:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=_child_setup(cgroup))
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill(proc)
                cgroup.close()
        with open(os.path.join(root, "stderr"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - MAX_OUTPUT))
            tail = f.read().decode(errors="replace")
    if timed_out:
        return RunResult(False, "timed out")
    if proc.returncode == 0:
        return RunResult(True, "passed")
    lines = tail.strip().splitlines()
    return RunResult(False, "failed: " + (lines[-1] if lines else f"exit code {proc.returncode}"))


def _kill(proc: subprocess.Popen) -> None:
    """End the child and everything in its session (the namespace's PID 1 goes with the
    unshare process, and takes its namespace along); every wait here is bounded."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        logger.warning("sandbox: child %d did not end within 5 s of SIGKILL", proc.pid)


def check_humaneval(completion: str, meta: dict, timeout: float = 10.0) -> RunResult:
    """HumanEval: the prompt, the model's completion, the task's tests, then ``check(entry)``."""
    program = f"{meta['prompt']}{completion}\n\n{meta['test']}\n\ncheck({meta['entry_point']})\n"
    return run_python(program, timeout=timeout)
