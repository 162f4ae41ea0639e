"""Does the tilt feed on its own novelty? For every ESamp method of the held-out and tuning
runs, each degenerate sample's mean novelty (the norm of its prediction error, from the
sample's ``esamp`` metadata) against its group's: the mean over degenerate and over healthy
samples, and how many of its group's standard deviations a degenerate sample sits above
the group's mean.

    python docs/results/explore_quality/novelty_of_degenerate.py
"""

import gzip
import json
from pathlib import Path

import numpy as np

from sglang_esamp.evaluation.degeneracy import is_degenerate

RESULTS = Path(__file__).resolve().parent.parent
RUNS = ["explore_heldout/creative_center", "explore_heldout/chat_center", "explore_tune/creative_center",
        "explore_tune/chat_center", "explore_heldout/creative", "explore_heldout/chat"]


def main() -> None:
    print("| run | method | degenerate: n, novelty | healthy: n, novelty | degenerate, z within its group |")
    print("| --- | --- | --- | --- | --- |")
    for run in RUNS:
        rows = [json.loads(line) for line in gzip.open(RESULTS / run / "samples.jsonl.gz", "rt")]
        for method in sorted({r["method"] for r in rows if r["method"].startswith("esamp")}):
            bad, good, z = [], [], []
            for r in (r for r in rows if r["method"] == method):
                novelty = np.array([s["esamp"]["novelty"] for s in r["samples"]])  # (n,)
                for s, v in zip(r["samples"], novelty):
                    broken = is_degenerate(s["text"])
                    (bad if broken else good).append(v)
                    if broken and novelty.std() > 0:
                        z.append((v - novelty.mean()) / novelty.std())
            if bad:
                print(f"| {run} | {method} | {len(bad)}, {np.mean(bad):.1f} | {len(good)}, {np.mean(good):.1f} | {np.mean(z):+.2f} |")


if __name__ == "__main__":
    main()
