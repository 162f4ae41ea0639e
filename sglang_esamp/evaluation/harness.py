"""``sglang-esamp eval``: every method on the same problems, on one server, in one run.

Problems go in chunks of ``concurrency``; within a chunk the methods take turns, each
sending the chunk's problems at once (n samples per request), so machine noise and the
server's state fall on all methods alike. Only generation is timed; scoring the samples
under the reference model and running code tests come after. Each (method, problem) record is appended to
``samples.jsonl`` as soon as it is scored: a rerun with the same ``--out`` skips what is
there, and refuses a folder written with another configuration, the server's effective
ESamp config included (so a change of defaults cannot mix into a resumed run). A larger
``--limit`` extends a run: problems come in file order, so the first ones are the same.

Files in ``--out``: ``config.json``, ``samples.jsonl``; then ``report.py`` adds
``results.json``, ``report.md``, ``passk.png`` and ``diversity.png``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from ..core.config import ESampConfig
from ..lang.prompts import CODE_STOP, MATH_INSTRUCTION
from ..launch.server import esamp_state
from .answers import answers_match, extract_answer
from .client import EvalClient
from .methods import Method
from .sandbox import check_humaneval
from .tasks import Problem, load_task

DEFAULT_TOKENS = {"math": 256, "code": 256, "creative": 96, "chat": 64}


@dataclasses.dataclass
class EvalConfig:
    task: str
    split: str
    limit: int | None
    n: int
    methods: list[Method]
    max_new_tokens: int
    concurrency: int = 4
    server_args: str = ""  # extra flags of the server the run started (ESamp settings under test)
    esamp_config: dict | None = None  # the server's effective ESamp config, read from it at the start

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["methods"] = [{"name": m.name, "sampling": m.sampling, "extra": sorted(m.extra)} for m in self.methods]
        return d


def _score(problem: Problem, samples: list[dict]) -> None:
    for s in samples:
        if problem.kind == "math":
            s["answer"] = extract_answer(s["text"])
            s["correct"] = answers_match(s["answer"], problem.answer)
        elif problem.kind == "code":
            s["correct"] = check_humaneval(s["text"], problem.meta).passed


def _generate(client: EvalClient, cfg: EvalConfig, method: Method, problem: Problem) -> tuple[list[int], list[dict]]:
    ids = client.prompt_ids(problem, MATH_INSTRUCTION)
    sampling = {**method.sampling, "max_new_tokens": cfg.max_new_tokens}
    if problem.kind == "code":
        sampling["stop"] = CODE_STOP
    return ids, client.sample(ids, cfg.n, sampling, method.extra)


def _finish(client: EvalClient, method: Method, problem: Problem, ids: list[int], samples: list[dict]) -> dict:
    """Score under the reference model and check answers (outside the timed part)."""
    for s, nll in zip(samples, client.nll(ids, [s.pop("output_ids") for s in samples])):
        s["nll"] = nll
    _score(problem, samples)
    return {"method": method.name, "problem": problem.id, "samples": samples}


def _covers(limit: int | None, old: int | None) -> bool:
    return limit is None or (old is not None and limit >= old)


def _open_out(out: Path, cfg: EvalConfig) -> set[tuple[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    new = json.loads(json.dumps(cfg.to_json()))
    if config_path.exists():
        old = json.loads(config_path.read_text())
        if old.get("esamp_config") is not None:  # a knob added since the run started ran at its default
            old["esamp_config"] = dataclasses.asdict(ESampConfig()) | old["esamp_config"]
        if {**old, "limit": None} != {**new, "limit": None}:
            raise SystemExit(f"{out} holds a run with another configuration ({config_path}); choose another --out")
        if not _covers(new["limit"], old["limit"]):
            raise SystemExit(f"{out} holds a run of --limit {old['limit']}; a rerun may extend it, not cut it")
    config_path.write_text(json.dumps(new, indent=2))
    done = set()
    path = out / "samples.jsonl"
    if path.exists():
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interruption: redo it
                    continue
                done.add((rec["method"], rec["problem"]))
    return done


def run_eval(url: str, cfg: EvalConfig, out: Path) -> None:
    problems = load_task(cfg.task, cfg.split, cfg.limit)
    client = EvalClient(url)
    cfg = dataclasses.replace(cfg, esamp_config=(esamp_state(url) or {}).get("config"))
    done = _open_out(out, cfg)
    chunks = [problems[i : i + cfg.concurrency] for i in range(0, len(problems), cfg.concurrency)]
    bar = tqdm(total=len(problems) * len(cfg.methods), desc=f"eval {cfg.task}", unit="problem-method", initial=len(done))
    with open(out / "samples.jsonl", "a") as sink, ThreadPoolExecutor(cfg.concurrency) as pool:
        for chunk in chunks:
            for method in cfg.methods:
                todo = [p for p in chunk if (method.name, p.id) not in done]
                if not todo:
                    continue
                t0 = time.monotonic()
                generated = list(pool.map(lambda p, m=method: _generate(client, cfg, m, p), todo))
                share = (time.monotonic() - t0) / len(todo)
                records = list(pool.map(lambda a, m=method: _finish(client, m, *a), [(p, *g) for p, g in zip(todo, generated)]))
                for rec in records:
                    rec["seconds"] = share  # this problem's share of the chunk's wall time
                    sink.write(json.dumps(rec) + "\n")
                sink.flush()
                bar.update(len(todo))
    bar.close()
