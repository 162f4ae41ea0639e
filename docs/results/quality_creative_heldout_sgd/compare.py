"""Paired per-prompt differences between the esamp@0.5 rows of two eval folders (same
prompts, same n); by default SGD (this folder) against Adam (quality_creative_heldout_exact).

    python docs/results/quality_creative_heldout_sgd/compare.py [NEW_FOLDER OLD_FOLDER]
"""

import json
import sys
from pathlib import Path

from sglang_esamp.evaluation.metrics import paired_diff_ci
from sglang_esamp.evaluation.report import _per_problem, open_samples

HERE = Path(__file__).resolve().parent
DEFAULT = (HERE, HERE.parent / "quality_creative_heldout_exact")
KEYS = ("similarity", "vendi", "ppl", "early_stop", "rel_err")


def rows(folder: Path) -> dict[str, dict]:
    cfg = json.loads((folder / "config.json").read_text())
    out = {}
    for line in open_samples(folder):
        rec = json.loads(line)
        if rec["method"] == "esamp@0.5":
            out[rec["problem"]] = _per_problem(rec, cfg["n"], cfg["max_new_tokens"])
    return out


def main() -> None:
    first, second = (Path(a) for a in sys.argv[1:3]) if len(sys.argv) == 3 else DEFAULT
    new, old = rows(first), rows(second)
    common = sorted(set(new) & set(old))
    print(f"{len(common)} prompts; {first.name} minus {second.name}, mean [95% interval]")
    for key in KEYS:
        mean, low, high = paired_diff_ci([new[p][key] for p in common], [old[p][key] for p in common])
        print(f"| {key} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] |")


if __name__ == "__main__":
    main()
