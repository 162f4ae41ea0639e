"""ServerProcess.stop ends the whole process group, not only the launcher."""

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from sglang_esamp.launch.server import ServerProcess

# a launcher that SIGTERM ends at once, with a child (a scheduler) that takes a second to exit
SLOW_CHILD = """
import os, signal, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1.0), os._exit(0)))
    print(os.getpid(), flush=True)
    while True:
        time.sleep(0.1)
time.sleep(60)
"""


def test_stop_waits_for_every_process_of_the_server():
    srv = ServerProcess()
    srv.proc = subprocess.Popen([sys.executable, "-c", SLOW_CHILD], stdout=subprocess.PIPE, start_new_session=True, text=True)
    child = Path(f"/proc/{int(srv.proc.stdout.readline())}/stat")  # it handles SIGTERM from here on
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 >= 0.9  # it waited for the slow child
    with contextlib.suppress(FileNotFoundError):  # gone, or a zombie its new parent has yet to reap
        assert child.read_text().rsplit(")", 1)[1].split()[0] == "Z"


# a launcher that, like SGLang's, outlives its children by a few seconds after SIGTERM
LINGERING_LAUNCHER = """
import os, signal, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        time.sleep(0.1)
signal.signal(signal.SIGTERM, lambda *a: time.sleep(5.0))
print("ready", flush=True)
time.sleep(60)
"""


def test_stop_does_not_wait_out_a_lingering_launcher():
    srv = ServerProcess()
    srv.proc = subprocess.Popen([sys.executable, "-c", LINGERING_LAUNCHER], stdout=subprocess.PIPE, start_new_session=True, text=True)
    assert srv.proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 3.0 and srv.proc.returncode is not None
    assert not srv._group_members()


def test_free_ports_are_below_the_ephemeral_range_and_sglangs():
    from sglang_esamp.launch.server import free_port

    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(port < min(ephemeral, 22000) for port in ports) and len(ports) > 1
