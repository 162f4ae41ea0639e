"""Per-step cost of the sampling path's pieces at the embedded model's shape (64 rows, hidden
576, vocabulary 49,152, bf16 head), in one process: the dense tilt, the plausible form, and
the stratified draw, beside SGLang's own softmax of the batch; the plausible form with
its stop cap as the sampler's hook runs it, written as whole rows (the earlier way) and at
the changed tokens only; and the two later pieces, group centering (8 groups of 8 rows) and
the plausible form with the bound on any token's gain. Median of 20 runs each.

    OMP_NUM_THREADS=2 python docs/results/explore_quality/step_cost.py
"""

import statistics
import time

import torch

from sglang_esamp.core import Head, StopCap, Strata, VocabMoments, plausible_tilt, tilt_dense, tilt_plausible
from sglang_esamp.core.tilt import center_on_group

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
    cap = StopCap([0, 2], "probability", "cpu")
    logits = x.clone()  # the batch's logits, written in place as the sampler's hook does
    row_group = torch.arange(N) // 8  # (N,) 8 groups of 8 rows

    def plausible_with_cap_whole_rows():  # a copy of every row, the cap's scratch over the untilted and the tilted rows
        ref = cap.reference(logits, temps)
        tilted = tilt_plausible(logits.clone(), h, h_hat, head, beta, "residual", temps, 0.05, moments)
        logits.copy_(cap.apply(tilted, ref, temps))

    def plausible_with_cap_changed_tokens():  # the K changed values and the S stop logits, one pass over the row
        ids, before, after = plausible_tilt(logits, h, h_hat, head, beta, "residual", temps, 0.05, moments)
        stops = cap.plausible(logits, ids, before, after, temps)
        logits.scatter_(1, ids, after)
        logits[:, cap.stop_ids] = stops

    cases = {
        "SGLang's softmax of the batch": lambda: torch.softmax(x, -1),
        "dense tilt (residual)": lambda: tilt_dense(x, h, h_hat, head, beta, "residual", moments),
        "plausible tilt (floor 0.05)": lambda: tilt_plausible(x.clone(), h, h_hat, head, beta, "residual", temps, 0.05, moments),
        "a copy of the logits": lambda: x.clone(),
        "stratified draw": lambda: strata.pick(probs, rows),
        "plausible tilt and stop cap, written as whole rows (before)": plausible_with_cap_whole_rows,
        "plausible tilt and stop cap, written at the changed tokens (now)": plausible_with_cap_changed_tokens,
        "group centering": lambda: center_on_group(h, h_hat, row_group, N // 8),
        "plausible tilt, gain bound 5": lambda: plausible_tilt(x, h, h_hat, head, beta, "residual", temps, 0.05, moments, max_gain=5.0),
        "plausible tilt, no gain bound": lambda: plausible_tilt(x, h, h_hat, head, beta, "residual", temps, 0.05, moments),
    }
    print(f"| piece ({N} rows, V {V}, torch threads {torch.get_num_threads()}) | ms |")
    print("| --- | --- |")
    for name, fn in cases.items():
        print(f"| {name} | {median_ms(fn):.2f} |")


if __name__ == "__main__":
    main()
