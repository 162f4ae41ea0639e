"""The CPU bootstrap: environment, the sgl_kernel stand-in, and server defaults."""

import os
import subprocess
import sys

from sglang_esamp.launch import cpu
from sglang_esamp.runtime.launcher import FORK_ENV, fork_children


def test_setup_prepares_this_process_and_children():
    assert cpu.setup() is True  # this suite runs on machines without a GPU
    assert os.environ["SGLANG_USE_CPU_ENGINE"] == "1"
    assert int(os.environ["OMP_NUM_THREADS"]) >= 1
    assert str(cpu.STAND_IN_DIR) == sys.path[0] or str(cpu.STAND_IN_DIR) in sys.path
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(cpu.STAND_IN_DIR)
    cpu.setup()  # idempotent
    assert os.environ["PYTHONPATH"].split(os.pathsep).count(str(cpu.STAND_IN_DIR)) == 1


def test_stand_in_reaches_a_child_and_raises_a_clear_error():
    code = (
        "import sgl_kernel\n"
        "from sgl_kernel import copy_all_layer_kv_cache_cpu as f\n"
        "assert sgl_kernel._STAND_IN\n"
        "try:\n    f(1)\nexcept RuntimeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=os.environ, capture_output=True, text=True, check=True)
    assert "sgl_kernel.copy_all_layer_kv_cache_cpu was called" in out.stdout
    assert "docs/cpu.md" in out.stdout


def test_server_defaults_bound_the_cache_and_sleep_when_idle():
    d = cpu.server_defaults()
    assert d["device"] == "cpu" and d["attention_backend"] == "torch_native"
    assert d["sampling_backend"] == "pytorch" and d["disable_cuda_graph"] is True
    assert d["sleep_on_idle"] is True and d["max_total_tokens"] == cpu.CPU_MAX_TOTAL_TOKENS


def test_cli_defaults_respect_flags_the_user_set():
    args = cpu.cli_defaults(["--max-total-tokens", "9000", "--attention-backend=triton"])
    assert "--max-total-tokens" not in args and "--attention-backend" not in args
    assert "--sleep-on-idle" in args and "--disable-cuda-graph" in args
    assert args[args.index("--device") + 1] == "cpu"


def test_cuda_machine_is_left_alone(monkeypatch):
    monkeypatch.setattr(cpu, "has_cuda", lambda: True)
    assert cpu.server_defaults() == {} and cpu.cli_defaults([]) == []
    monkeypatch.delenv("SGLANG_USE_CPU_ENGINE", raising=False)
    assert cpu.setup() is False
    assert "SGLANG_USE_CPU_ENGINE" not in os.environ


MARK = []  # appended to after import: a forked child sees it, a spawned one re-imports this module


def _report_mark(queue):
    queue.put(len(MARK))


def test_the_launcher_forks_only_on_the_cpu_and_when_asked(monkeypatch):
    import multiprocessing

    old = multiprocessing.get_start_method(allow_none=True)
    monkeypatch.delenv(FORK_ENV, raising=False)
    try:
        multiprocessing.set_start_method("spawn", force=True)  # what SGLang's launcher sets
        assert not fork_children("cpu")  # not asked: an in-process engine's host
        monkeypatch.setenv(FORK_ENV, "1")
        assert not fork_children("cuda")
        assert multiprocessing.get_start_method() == "spawn"
        assert fork_children("cpu")
        MARK.append(1)
        queue = multiprocessing.Queue()
        child = multiprocessing.Process(target=_report_mark, args=(queue,))
        child.start()
        assert queue.get(timeout=60) == 1  # the child has this process's memory: it was forked
        child.join(60)
    finally:
        MARK.clear()
        multiprocessing.set_start_method(old, force=True)
