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
