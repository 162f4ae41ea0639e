"""Per-step cost of the sampling path's pieces at the embedded model's shape (64 rows, hidden
576, vocabulary 49,152, bf16 head), in one process: the dense tilt, the plausible form, and
the stratified draw, beside SGLang's own softmax of the batch. Median of 20 runs each.

    OMP_NUM_THREADS=2 python docs/results/explore_quality/step_cost.py
"""

import statistics
import time

import torch

from sglang_esamp.core import Head, Strata, VocabMoments, tilt_dense, tilt_plausible

N, D, V = 64, 576, 49152


def median_ms(fn, runs: int = 20) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    head = Head((torch.randn(V, D) * 0.05).to(torch.bfloat16))
    moments = VocabMoments.of(head)
    h, h_hat = torch.randn(N, D), torch.randn(N, D)
    x = head.logits(h).float()
    beta, temps = torch.full((N,), 0.5), torch.ones(N)
    probs = torch.softmax(x, -1)
    strata = Strata(N, "cpu")
    rows = torch.arange(N)
    strata.start(rows, torch.arange(N, dtype=torch.float64) / N, 0.3)
    cases = {
        "SGLang's softmax of the batch": lambda: torch.softmax(x, -1),
        "dense tilt (residual)": lambda: tilt_dense(x, h, h_hat, head, beta, "residual", moments),
        "plausible tilt (floor 0.05)": lambda: tilt_plausible(x.clone(), h, h_hat, head, beta, "residual", temps, 0.05, moments),
        "a copy of the logits (the plausible form works on one)": lambda: x.clone(),
        "stratified draw": lambda: strata.pick(probs, rows),
    }
    print(f"| piece ({N} rows, V {V}, torch threads {torch.get_num_threads()}) | ms |")
    print("| --- | --- |")
    for name, fn in cases.items():
        print(f"| {name} | {median_ms(fn):.2f} |")


if __name__ == "__main__":
    main()
