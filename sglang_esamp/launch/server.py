"""Start and stop a real SGLang HTTP server in a child process, for programs and tests.

The child is ``sglang-esamp serve``: the embedded model by default, the CPU bootstrap
applied when there is no GPU. ``ServerProcess`` waits until the server answers, and on exit
stops the whole process group, so no scheduler is left running.

Usage::

    with ServerProcess(["--enable-esamp"]) as server:
        requests.post(server.url + "/generate", json={...})
    with server_url(args.url, ["--enable-esamp"]) as url:   # the given server, or one started here
        ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from tqdm import tqdm

logger = logging.getLogger(__name__)

START_TIMEOUT = 600.0  # a first start on 2 cores may include the model conversion


def free_port(low: int = 10000, high: int = 21999) -> int:
    """A free port below both the kernel's ephemeral range (32768 and up, where outgoing
    connections, the TP ranks' among them, take their ports while the server starts) and the
    range SGLang draws its own ports from (22000-29999), so that nothing takes it between
    this check and the server's bind; an ephemeral one if that range is full."""
    for port in random.Random().sample(range(low, high + 1), 64):  # its own seed: a seeded global state never repeats ports
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: list[str] | None = None, port: int | None = None, timeout: float = START_TIMEOUT,
                 env: dict[str, str] | None = None, progress: bool = False):
        self.env = {**os.environ, **(env or {})}  # the child's environment: this one, plus ``env``
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args or [])
        self.timeout = timeout
        self.progress = progress  # a bar on stderr with the seconds waited and the server log's newest line
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="sglang-esamp-server-", suffix=".log", delete=False)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "sglang_esamp.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        t0 = time.monotonic()
        with tqdm(desc="starting the SGLang server", unit="s", bar_format="{desc}: {elapsed} {postfix}", disable=not self.progress) as bar:
            while time.monotonic() < t0 + self.timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sglang server exited with code {self.proc.returncode}:\n{self.tail()}")
                try:
                    if requests.get(self.url + "/health", timeout=2).status_code == 200:
                        return
                except requests.RequestException:
                    pass
                bar.set_postfix_str(self._stage(), refresh=True)
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"sglang server did not answer within {self.timeout:.0f} s:\n{self.tail()}")

    def _stage(self) -> str:
        """The newest line of the server's log, without its timestamp, cut to 70 characters."""
        lines = [line for line in self.tail(2000).splitlines() if line.strip()]
        return lines[-1].split("] ", 1)[-1][:70] if lines else ""

    def stop(self, timeout: float = 30.0) -> None:
        """End the whole process group and wait until every member has exited, so that the
        next server starts on a quiet machine. SGLang's launcher sleeps 5 s after its
        children die (for crash diagnostics): once only it and multiprocessing's helpers are
        left, SIGKILL ends it, and the helpers clean up and exit when it is gone. After
        ``timeout`` seconds, SIGKILL ends the whole group."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while (members := self._group_members()) and time.monotonic() < deadline:
            if all(pid == self.proc.pid or _is_helper(pid) for pid in members):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
            time.sleep(0.1)
        if self._group_members():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _group_members(self) -> set[int]:
        """The live processes of the server's group (Linux's /proc; a zombie waiting to be
        reaped does not count)."""
        self.proc.poll()  # reap the launcher
        members = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError):
                state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]  # after "pid (command)"
                if group == str(self.proc.pid) and state != "Z":
                    members.add(int(stat.parent.name))
        return members

    def tail(self, chars: int = 4000) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()[-chars:]


def _is_helper(pid: int) -> bool:
    """Whether ``pid`` is one of multiprocessing's helper processes (its resource tracker)."""
    try:
        return b"from multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def esamp_states(url: str) -> list[dict | None]:
    """The ESamp section of each scheduler's state in /get_server_info (one per DP rank;
    counters and config), None where ESamp is off."""
    info = requests.get(url.rstrip("/") + "/get_server_info", timeout=30).json()
    return [state.get("esamp") for state in info.get("internal_states") or [{}]]


def esamp_state(url: str) -> dict | None:
    """The first rank's ESamp section of /get_server_info; None when off."""
    return esamp_states(url)[0]


@contextlib.contextmanager
def server_url(url: str | None, server_args: list[str], warm_base: bool = True):
    """Yield a server URL: the given one, or that of a server started here on the embedded
    model with ``server_args`` (converted first, so its start timer covers only the start),
    its base distiller warmed unless ``warm_base`` is false."""
    if url:
        yield url.rstrip("/")
        return
    from .calibrate import ensure_warm
    from .model_cache import embedded_model_path

    embedded_model_path()
    logger.info("Starting the SGLang server: %s", " ".join(server_args))
    with ServerProcess(server_args, progress=True) as server:
        if warm_base:
            ensure_warm(server.url)
        yield server.url
