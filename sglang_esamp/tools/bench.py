"""``sglang-esamp bench``: output throughput of plain sampling against ESamp, on one server.

Cases, on the same server (started with ``--enable-esamp``) and the same prompts:

- ``vanilla``: requests without ``explore`` (no group, no training, no tilt);
- ``esamp explore=0``: capture and training only;
- ``esamp explore=B``: capture, training and the tilt, with the n samples' stratified codes
  (the default for n > 1; where every row of a batch is stratified, SGLang's own draw is not
  made, which on a CPU saves more than ESamp costs);
- ``esamp explore=B independent``: the same with ``stratified: false``, so each row draws
  through SGLang's sampler as in ``vanilla``: ESamp's cost alone.

Workload per case: B prompts x n samples, ``max_new_tokens`` fixed with ``ignore_eos``, all
sent at once. The cases run interleaved, ``repeats`` rounds with a rotated order, after
one untimed warm-up round, so machine noise falls on all of them; each case reports its
median round. An ESamp case whose distiller trained no step is void.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from tqdm import tqdm

from ..evaluation.tasks import load_task
from ..launch.server import esamp_state


def _counters(url: str) -> dict[str, int]:
    """Distiller steps trained, and row-steps tilted per form of the tilt, so far."""
    esamp = esamp_state(url)
    if esamp is None:
        raise SystemExit(f"the server at {url} does not run ESamp; start it with --enable-esamp")
    return {"steps": int(esamp["steps_finished"]), **{k: int(v) for k, v in esamp["tilted_rows"].items()}}


def _round(url: str, prompts: list[str], n: int, tokens: int, extra: dict) -> tuple[float, int]:
    """(seconds, output tokens) for the whole workload at once."""
    def one(prompt: str) -> int:
        body = {"text": prompt, "sampling_params": {"n": n, "max_new_tokens": tokens, "ignore_eos": True, "temperature": 1.0, **extra}}
        res = requests.post(url + "/generate", json=body, timeout=3600)
        res.raise_for_status()
        out = res.json()
        return sum(o["meta_info"]["completion_tokens"] for o in (out if isinstance(out, list) else [out]))

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(prompts)) as pool:
        produced = sum(pool.map(one, prompts))
    return time.monotonic() - t0, produced


def run_bench(url: str, prompts: int, n: int, tokens: int, repeats: int, explore: float) -> dict:
    texts = [p.question for p in load_task("creative", limit=prompts)]
    if len(texts) < prompts:
        raise SystemExit(f"--prompts is at most {len(texts)} (the shipped story openings)")
    cases = [("vanilla", {}), ("esamp explore=0", {"explore": 0.0}), (f"esamp explore={explore:g}", {"explore": explore}),
             (f"esamp explore={explore:g} independent", {"explore": explore, "stratified": False})]
    _round(url, texts, min(n, 2), min(tokens, 8), {"explore": explore})  # warm-up
    runs = {name: [] for name, _ in cases}
    counts = {name: {} for name, _ in cases}
    with tqdm(total=repeats * len(cases), desc="bench", unit="case") as bar:
        for r in range(repeats):
            for name, extra in cases[r % len(cases):] + cases[: r % len(cases)]:
                before = _counters(url)
                seconds, produced = _round(url, texts, n, tokens, extra)
                for key, value in _counters(url).items():
                    counts[name][key] = counts[name].get(key, 0) + value - before[key]
                runs[name].append(produced / seconds)
                bar.update(1)
    result = {"workload": {"prompts": prompts, "n": n, "max_new_tokens": tokens, "repeats": repeats}, "cases": {}}
    for name, _ in cases:
        steps = counts[name].pop("steps")
        result["cases"][name] = {"tok_s": statistics.median(runs[name]), "tok_s_runs": runs[name], "steps_trained": steps,
                                 "tilted_rows": counts[name]}
        if name != "vanilla":
            result["cases"][name]["void"] = steps == 0
    vanilla = result["cases"]["vanilla"]["tok_s"]
    for case in result["cases"].values():
        case["ratio_to_vanilla"] = case["tok_s"] / vanilla
    result["ratio"] = result["cases"][cases[2][0]]["ratio_to_vanilla"]
    return result


def print_table(result: dict) -> None:
    w = result["workload"]
    print(f"\n{w['prompts']} prompts x n={w['n']}, {w['max_new_tokens']} tokens each, median of {w['repeats']} interleaved rounds\n")
    print("| case | output tok/s | ratio to vanilla | distiller steps trained | runs (tok/s) |\n| --- | --- | --- | --- | --- |")
    for name, c in result["cases"].items():
        steps = "-" if name == "vanilla" else str(c["steps_trained"]) + (" (VOID: no training)" if c.get("void") else "")
        print(f"| {name} | {c['tok_s']:.1f} | {c['ratio_to_vanilla']:.3f} | {steps} | {', '.join(f'{x:.1f}' for x in c['tok_s_runs'])} |")
