"""Pass@1, @4 and @16 of this folder's methods on the problems every method has finished
(the run is resumable and may be partial), each method paired against vanilla per problem
with a 95% bootstrap interval over problems.

    python docs/results/svamp_n16/passk.py
"""

import gzip
import json
from pathlib import Path

import numpy as np

from sglang_esamp.evaluation.metrics import pass_at_k

HERE = Path(__file__).resolve().parent
KS = (1, 4, 16)


def load() -> dict[str, dict[str, list[bool]]]:
    """method -> problem -> each sample's correctness."""
    path = HERE / "samples.jsonl"
    lines = (gzip.open(path.with_suffix(".jsonl.gz"), "rt") if not path.exists() else path.open())
    runs: dict[str, dict[str, list[bool]]] = {}
    for line in lines:
        r = json.loads(line)
        runs.setdefault(r["method"], {})[r["problem"]] = [bool(s["correct"]) for s in r["samples"]]
    return runs


def paired_interval(diff: np.ndarray, draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(1)  # (draws,)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    runs = load()
    problems = sorted(set.intersection(*(set(p) for p in runs.values())))
    score = {m: np.array([[pass_at_k(len(runs[m][p]), sum(runs[m][p]), k) for k in KS] for p in problems]) * 100
             for m in runs}  # method -> (problems, len(KS)) in percent
    print(f"{len(problems)} problems finished by every method\n")
    print("| method | " + " | ".join(f"pass@{k}" for k in KS) + " |")
    print("| --- |" + " --- |" * len(KS))
    for m, s in score.items():
        cells = [f"{s[:, i].mean():.1f}" for i in range(len(KS))]
        if m != "vanilla":
            for i in range(len(KS)):
                d = s[:, i] - score["vanilla"][:, i]
                lo, hi = paired_interval(d)
                cells[i] += f" ({d.mean():+.1f} [{lo:+.1f}, {hi:+.1f}])"
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
