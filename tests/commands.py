"""Running ``sglang-esamp`` from the tests: in a process of its own (one smoke test per entry
point), or in the test's process (no interpreter start, no second import of sglang), with the
same exit status, stdout and stderr."""

import io
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from sglang_esamp.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cli_process(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sglang_esamp.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``sglang-esamp ARGS`` in this process: its exit status, stdout and stderr as a process's
    (a SystemExit's message is what the interpreter would print on stderr)."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    handler = signal.getsignal(signal.SIGTERM)  # main() maps SIGTERM to an exit for its own process
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if isinstance(exc.code, str):
            err.write(exc.code + "\n")
    finally:
        signal.signal(signal.SIGTERM, handler)
    proc = subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
