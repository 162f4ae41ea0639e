"""Where ESamp's degenerate samples come from, read off samples already collected.

For each run folder (``samples.jsonl.gz``) and method:
- runs: words (whitespace-separated) of 12+, 16+ and 25+ characters, and the share of 16+
  runs that reach 25 (token soup);
- stops: the share of samples that ended on their own, and the degenerate rate of those
  that ran to the length limit;
- with ``--onset TASK``: the plain model's probability of each sampled token over the top
  token's (fp32, transformers), the share of tokens below the plausible form's floor (0.05),
  and how many soups hold such a token among their run's first four tokens.

Usage::

    python degenerate_anatomy.py ../explore_heldout/chat65_g5 ../explore_heldout/chat65_hold
    python degenerate_anatomy.py --onset chat ../explore_heldout/chat65_g5
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

from sglang_esamp.evaluation.degeneracy import _RUN, is_degenerate

FLOOR = 0.05


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.open(folder / "samples.jsonl.gz")]


def runs_and_stops(folder: Path) -> None:
    out: dict[str, dict] = {}
    for r in rows(folder):
        d = out.setdefault(r["method"], dict(n=0, r12=0, r16=0, r25=0, stop=0, length=0, length_degen=0))
        for s in r["samples"]:
            lengths = [len(w) for w in re.findall(r"\S+", s["text"])]
            d["n"] += 1
            d["r12"] += sum(n >= 12 for n in lengths)
            d["r16"] += sum(n >= 16 for n in lengths)
            d["r25"] += sum(n >= 25 for n in lengths)
            if s["finish"] == "stop":
                d["stop"] += 1
            else:
                d["length"] += 1
                d["length_degen"] += is_degenerate(s["text"])
    for method, d in out.items():
        print(f"{folder.name} {method}: {d['n']} samples; runs 12+ {d['r12']}, 16+ {d['r16']}, 25+ {d['r25']} "
              f"(16+ reaching 25: {d['r25'] / max(d['r16'], 1):.3f}); natural stops {d['stop'] / d['n']:.3f}; "
              f"degenerate among those at the length limit {d['length_degen'] / max(d['length'], 1):.3f}")


def onsets(folder: Path, task: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_esamp.evaluation.client import prompt_ids
    from sglang_esamp.evaluation.tasks import load_task
    from sglang_esamp.launch.model_cache import embedded_model_path

    path = embedded_model_path(show_progress=False)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    problems = {p.id: p for p in load_task(task)}
    stats: dict[str, list[int]] = {}
    for r in rows(folder):
        prompt = prompt_ids(tok, problems[r["problem"]], "")
        d = stats.setdefault(r["method"], [0, 0, 0, 0])  # tokens, below the floor, soups, soups with one at onset
        for s in r["samples"]:
            enc = tok(s["text"], add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = enc["input_ids"], enc["offset_mapping"]
            if not ids:
                continue
            with torch.no_grad():
                p = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1].softmax(-1)  # (T, V)
            ratio = p.gather(1, torch.tensor(ids)[:, None])[:, 0] / p.max(-1).values  # (T,)
            d[0] += len(ids)
            d[1] += int((ratio < FLOOR).sum())
            soup = _RUN.search(s["text"])
            if soup:
                first = [i for i, (a, b) in enumerate(offsets) if b > soup.start() and a < soup.end()][:4]
                d[2] += 1
                d[3] += bool((ratio[first] < FLOOR).any())
    for method, (n, low, soups, at_onset) in stats.items():
        print(f"{folder.name} {method}: tokens below {FLOOR} p_max {low / n:.3f}; soups {soups}, "
              f"{at_onset} with such a token among their run's first four")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--onset", metavar="TASK", help="also the plain model's probabilities (chat or creative)")
    args = ap.parse_args()
    for folder in args.folders:
        runs_and_stops(folder)
        if args.onset:
            onsets(folder, args.onset)


if __name__ == "__main__":
    main()
