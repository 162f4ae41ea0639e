"""Every program in programs/, and ``sglang-esamp demo``, end to end in a fast mode against
the real CPU server (the tiny model), a few problems, n=2. The programs run as scripts in this
process (``__main__``, their own argv; no second import of sglang); two smoke tests start
them as processes of their own."""

import io
import json
import re
import runpy
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from ..commands import cli

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--n", "2", "--max-new-tokens", "6"]


def run(program: str, args: list[str]) -> str:
    """``python programs/PROGRAM ARGS`` in this process; its stdout."""
    path = str(ROOT / "programs" / program)
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = [path, *args]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        assert not exc.code, f"{program} exited with {exc.code}: {err.getvalue()[-3000:]}"
    finally:
        sys.argv = argv
    return out.getvalue()


def table_rows(out: str) -> dict[str, list[str]]:
    """The final markdown table: pass label -> cells."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and (cells[0] == "vanilla" or cells[0].startswith("explore=")):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize(
    "program, extra",
    [
        ("best_of_n.py", ["--task", "mawps", "--limit", "2"]),
        ("best_of_n.py", ["--task", "humaneval", "--limit", "1"]),
        ("self_consistency.py", ["--task", "svamp", "--limit", "2"]),
        ("creative_writing.py", ["--limit", "2"]),
        ("parallel_reasoning.py", ["--task", "gsm8k", "--limit", "1", "--plan-tokens", "4"]),
    ],
)
@pytest.mark.server
def test_program_runs_both_passes(tiny_esamp_server, program, extra):
    explore = [] if program == "creative_writing.py" else ["--explore", "0.5"]  # creative writing's default is 1
    out = run(program, ["--url", tiny_esamp_server.url, *explore, *FAST, *extra])
    rows = table_rows(out)
    assert set(rows) == {"vanilla", "explore=1" if program == "creative_writing.py" else "explore=0.5"}, out[-2000:]
    for cells in rows.values():
        assert re.fullmatch(r"\d+ s", cells[-1])  # time column
        assert all(re.fullmatch(r"-?[\d.]+%?", c) for c in cells[:-1]), cells  # no nan: each is defined at n = 2
        assert all(0 <= float(c[:-1]) <= 100 for c in cells[:-1] if c.endswith("%")), cells
        if program == "creative_writing.py":  # similarity, Vendi (of 2), empty
            assert -1 <= float(cells[0]) <= 1 and 1 - 1e-6 <= float(cells[1]) <= 2 + 1e-6, cells


@pytest.mark.server
def test_best_of_n_marks_each_attempt(tiny_esamp_server):
    out = run("best_of_n.py", ["--url", tiny_esamp_server.url, "--task", "svamp", "--limit", "2", *FAST, "--no-vanilla"])
    marks = re.findall(r"^  svamp/\S+\s+([✓·]{2})  (\d)/2$", out, flags=re.M)
    assert len(marks) == 2 and all(m.count("✓") == int(c) for m, c in marks)
    assert "vanilla" not in table_rows(out)


def test_bad_flag_is_a_clear_error():
    proc = subprocess.run([sys.executable, "programs/best_of_n.py", "--n", "0", "--url", "http://127.0.0.1:9"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--n must be >= 1" in proc.stderr


def _demo_rows(out: str, labels: tuple[str, str]) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line.startswith(tuple(f"| {label} |" for label in labels))]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


@pytest.mark.server
def test_demo_prints_both_tables_and_writes_the_report(tiny_esamp_server, tmp_path):
    out = cli("demo", "--url", tiny_esamp_server.url, "--stories", "2", "--story-tokens", "6", "--chats", "2",
              "--chat-tokens", "6", "--problems", "2", "--n", "2", "--max-new-tokens", "6", "--temperature", "1",
              "--out", str(tmp_path)).stdout
    rows = _demo_rows(out, ("plain T=1", "explore=1"))
    stories, chats = rows[:2], rows[2:4]
    maths = _demo_rows(out, ("plain T=1", "explore=0.25"))
    assert [r[0] for r in stories] == ["plain T=1", "explore=1"], out[-3000:]
    for cells in stories:  # similarity, distinct ideas (of 2), perplexity, empty, degenerate, time
        empty = int(cells[4])
        assert 0 <= empty <= 4 and 0 <= int(cells[5]) <= 4 and re.fullmatch(r"\d+ s", cells[6])
        if empty < 2:  # some opening kept both continuations
            assert -1.0 <= float(cells[1]) <= 1.0
        if empty < 4:  # some continuation is not empty
            assert 1.0 - 1e-6 <= float(cells[2]) <= 2.0 + 1e-6 and float(cells[3]) > 1.0
    assert [r[0] for r in chats] == ["plain T=1", "explore=1"]
    for cells in chats:  # distinct answers (of 2), distinct first words, degenerate, time
        assert 0.0 <= float(cells[1]) <= 2.0 and cells[2].endswith("%") and 0 <= int(cells[3]) <= 4
    assert [r[0] for r in maths[-2:]] == ["plain T=1", "explore=0.25"]
    for cells in maths[-2:]:
        assert re.fullmatch(r"[0-2]/2", cells[1]) and cells[2].endswith("%") and re.fullmatch(r"\d+ s", cells[5])
        assert 0.0 <= float(cells[3]) <= 2.0 and -1.0 <= float(cells[4]) <= 1.0
    assert "Stories: with explore=1 the continuations were" in out and "Word problems: explore=0.25 solved" in out
    assert "Chat: with explore=1 the answers held" in out
    report = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "diversity.png").stat().st_size > 10_000
    texts = [t for p in results["stories"] for o in p["openings"] for t in o["texts"]]
    assert len(texts) == 2 * 2 * 2 and len(results["math"][1]["problems"]) == 2
    rows = [line[:6] for line in report.splitlines()]
    assert rows.count("| 1 | ") == 4 and rows.count("| 2 | ") == 4  # two openings and two chats, two samples each, side by side
    assert len(results["chat"][1]["prompts"]) == 2
    assert all(" ".join(t.split()).replace("|", "\\|")[:40] in report for t in texts if t.strip())


def test_unreachable_server_is_a_clear_error():
    proc = subprocess.run([sys.executable, "programs/self_consistency.py", "--url", "http://127.0.0.1:9"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "cannot reach the SGLang server at http://127.0.0.1:9" in proc.stderr
