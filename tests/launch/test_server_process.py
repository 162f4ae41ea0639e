"""ServerProcess.stop ends the whole process group, not only the launcher."""

import os
import subprocess
import sys
import time

from sglang_esamp.launch.server import ServerProcess

# a launcher that SIGTERM ends at once, with a child (a scheduler) that takes a second to exit
SLOW_CHILD = """
import os, signal, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1.0), os._exit(0)))
    print("ready", flush=True)
    while True:
        time.sleep(0.1)
time.sleep(60)
"""


def test_stop_waits_for_every_process_of_the_server():
    srv = ServerProcess()
    srv.proc = subprocess.Popen([sys.executable, "-c", SLOW_CHILD], stdout=subprocess.PIPE, start_new_session=True, text=True)
    assert srv.proc.stdout.readline() == "ready\n"  # the child handles SIGTERM from here on
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 >= 0.9  # it waited for the slow child
    try:
        os.killpg(srv.proc.pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError("a process of the server's group outlived stop()")
