"""Paired per-prompt differences between methods of two chat eval folders on the same prompts
(e.g. ESamp with min-p in one run against plain T = 1 in another): similarity, perplexity
and natural stops. Run: ``python docs/results/chat_tune_minp/cross_run.py A_DIR METHOD_A B_DIR METHOD_B``."""

import json
import sys

from sglang_esamp.evaluation.metrics import paired_diff_ci
from sglang_esamp.evaluation.report import _per_problem


def rows(folder: str, method: str) -> dict:
    cfg = json.load(open(f"{folder}/config.json"))
    out = {}
    for line in open(f"{folder}/samples.jsonl"):
        rec = json.loads(line)
        if rec["method"] == method:
            row = _per_problem(rec, cfg["n"], cfg["max_new_tokens"])
            row["natural_stop"] = sum(s["finish"] == "stop" for s in rec["samples"]) / len(rec["samples"])
            out[rec["problem"]] = row
    return out


def main(a_dir: str, a: str, b_dir: str, b: str) -> None:
    ra, rb = rows(a_dir, a), rows(b_dir, b)
    common = sorted(set(ra) & set(rb))
    print(f"{a} ({a_dir}) minus {b} ({b_dir}), {len(common)} prompts:")
    for key in ("similarity", "ppl", "natural_stop"):
        mean, lo, hi = paired_diff_ci([ra[p][key] for p in common], [rb[p][key] for p in common])
        print(f"  {key}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]  ({sum(ra[p][key] for p in common) / len(common):.3f} against "
              f"{sum(rb[p][key] for p in common) / len(common):.3f})")


if __name__ == "__main__":
    main(*sys.argv[1:5])
