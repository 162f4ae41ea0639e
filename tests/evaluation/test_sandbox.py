"""The code sandbox: exit status, time and memory limits, no network, a private folder."""

import socket

import pytest

from sglang_esamp.evaluation.sandbox import _namespaces, check_humaneval, run_python
from sglang_esamp.evaluation.tasks import load_task


def test_pass_and_fail():
    assert run_python("assert 1 + 1 == 2").passed
    res = run_python("assert 1 + 1 == 3, 'bad sum'")
    assert not res.passed and "AssertionError: bad sum" in res.reason


def test_time_limit():
    res = run_python("while True:\n    pass", timeout=1.5)
    assert not res.passed and res.reason == "timed out"


def test_memory_limit():
    res = run_python("x = bytearray(3 * 1024**3)", memory_mb=512)
    assert not res.passed and "MemoryError" in res.reason


def test_no_network():
    res = run_python("import socket\nsocket.create_connection(('127.0.0.1', 9))")
    assert not res.passed and "network access is disabled" in res.reason


def test_runs_in_an_empty_temporary_folder():
    assert run_python("import os\nassert os.listdir('.') == ['candidate.py'], os.listdir('.')").passed


def test_humaneval_reference_solution_passes_and_a_wrong_one_fails():
    problem = load_task("humaneval", limit=1)[0]  # HumanEval/0: has_close_elements
    good = ("    for i, a in enumerate(numbers):\n        for b in numbers[i + 1:]:\n"
            "            if abs(a - b) < threshold:\n                return True\n    return False\n")
    assert check_humaneval(good, problem.meta).passed
    assert not check_humaneval("    return False\n", problem.meta).passed


def test_an_escaped_daemon_cannot_hold_the_run_open():
    """A child that leaves the process group (setsid) and keeps running is still ended, and
    the run returns within its time limit."""
    import time

    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nelse:\n    time.sleep(60)\n")
    t0 = time.monotonic()
    res = run_python(code, timeout=2.0)
    assert not res.passed and res.reason == "timed out" and time.monotonic() - t0 < 10


def test_output_is_capped():
    """Only the tail of stderr comes back, and a flood past the file-size limit ends the run."""
    from sglang_esamp.evaluation.sandbox import MAX_OUTPUT

    res = run_python("import sys\nsys.stderr.write('x' * 10_000_000)\nraise SystemExit('last words')", timeout=20)
    assert not res.passed and res.reason.endswith("last words") and len(res.reason) < MAX_OUTPUT + 20
    res = run_python("import sys\nsys.stderr.write('x' * 50_000_000)\nraise SystemExit('not reached')", timeout=20)
    assert not res.passed and "not reached" not in res.reason and len(res.reason) < MAX_OUTPUT + 20


def test_the_filesystem_is_read_only_but_the_run_folder():
    code = ("import os, pathlib\nopen('mine.txt', 'w').write('ok')\n"
            "for target in ('/tmp/esamp-escape.txt', os.path.expanduser('~/../esamp-escape.txt'), '/etc/esamp-escape'):\n"
            "    try:\n        open(target, 'w').write('x')\n    except OSError:\n        continue\n"
            "    raise SystemExit('wrote ' + target)\n")
    assert run_python(code).passed


def test_raw_sockets_cannot_leave_the_sandbox():
    """A listener on this machine's loopback, opened outside the jail, is out of reach from
    inside it: the candidate has a network namespace of its own."""
    if not _namespaces():
        pytest.skip("no namespaces here: the sandbox stops sockets only by its guard")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        code = f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))"
        res = run_python(code)
    assert not res.passed and "OSError" in res.reason, res.reason


def test_process_count_is_capped():
    code = ("import os, time\nkids = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n    kids += 1\nprint(kids)\nassert kids < 100, kids\n")
    res = run_python(code, timeout=20)
    assert res.passed, res.reason
