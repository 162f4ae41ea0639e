"""A GPU check of the bank's stream ordering: the threaded trainer on a side stream, with
that stream slowed down on purpose, must give exactly the predictions of a synchronous run.

Torch only (``sglang_esamp.core`` imports no sglang), random weights, so it runs on any
machine with a GPU:

    python -m sglang_esamp.tools.gpu_stream_check            # CUDA; prints JSON, exits 1 on a mismatch
    python -m sglang_esamp.tools.gpu_stream_check --device cpu   # the same sequence on the CPU (no streams)

The sequence, on a "forward" stream that is not the one the bank was built on (as under
SGLang's overlap scheduler): per step, predict every group's rows, then hand the rows to
the trainer; every few steps a slot is reset (a new group moving in) while a training step
for it is still queued, and the base is replaced. Each training step first spins its
stream for ``--sleep-cycles`` GPU cycles (``torch.cuda._sleep``), so a read that is not
ordered after the write it needs sees stale weights, and a reset that is not ordered after
a queued step sees its slot overwritten. The reference runs the same sequence inline with a
device synchronisation after every call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch

from ..core import AsyncTrainer, BatchLayout, DistillerBank, ESampConfig, GroupStats


def run(device: str, mode: str, steps: int, sleep_cycles: int, hidden: int = 256, seed: int = 0) -> list[torch.Tensor]:
    """The predictions of every step, on the host."""
    cfg = ESampConfig(max_groups=4, intermediate=128, staleness=0, trainer=mode, seed=seed)
    bank = DistillerBank(cfg, hidden, device)
    trainer = AsyncTrainer(bank, GroupStats(cfg.max_groups, device), staleness=0, mode=mode)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda and mode == "inline" else (lambda: None)
    if cuda and sleep_cycles:
        train = bank.train_step

        def slow_train(*args):
            torch.cuda._sleep(sleep_cycles)  # on the trainer's stream: its writes land late
            return train(*args)

        bank.train_step = slow_train
    gen = torch.Generator().manual_seed(seed)
    layout = BatchLayout.from_slots([0] * 4 + [1] * 4 + [2] * 4 + [3] * 4, device)
    forward = torch.cuda.Stream() if cuda else None
    out = []
    for step in range(steps):
        h1 = torch.randn(16, hidden, generator=gen).to(device)
        h = torch.randn(16, hidden, generator=gen).to(device)
        with torch.cuda.stream(forward) if cuda else contextlib.nullcontext():
            out.append(trainer.predict(layout, h1))
            sync()
            trainer.submit(layout, h1, h)
            sync()
            if step % 5 == 4:  # a new group moves in, as the runtime does it: drain, then reset
                trainer.drain()  # on CUDA: every queued step issued, not done
                base, _ = bank.read(torch.tensor([step % 4], device=device))
                bank.set_base(base)
                bank.reset([(step + 1) % 4])
                sync()
    trainer.drain()
    if cuda:
        torch.cuda.synchronize()
    trainer.close()
    return [p.float().cpu() for p in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sglang_esamp.tools.gpu_stream_check")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--sleep-cycles", type=int, default=20_000_000, help="GPU cycles each training step waits first")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 2
    reference = run(args.device, "inline", args.steps, 0)
    threaded = run(args.device, "thread", args.steps, args.sleep_cycles)
    diffs = [float((a - b).abs().max()) for a, b in zip(reference, threaded)]
    bad = [i for i, d in enumerate(diffs) if d > 1e-4]
    print(json.dumps({"device": args.device, "steps": args.steps, "sleep_cycles": args.sleep_cycles,
                      "max_abs_diff": max(diffs), "mismatched_steps": bad, "ok": not bad}))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
