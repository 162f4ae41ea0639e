"""The code sandbox: exit status, time and memory limits, no network, a private folder."""

from sglang_esamp.evaluation.sandbox import check_humaneval, run_python
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
