"""A GPU check of the bank's stream ordering and the lifetimes of what the trainer reads: the
threaded trainer on a side stream, with that stream slowed down on purpose, must give
exactly the predictions of a synchronous run.

Torch only (``sglang_esamp.core`` imports no sglang), random weights, so it runs on any
machine with a GPU:

    python -m sglang_esamp.tools.gpu_stream_check            # CUDA; prints JSON, exits 1 on a mismatch
    python -m sglang_esamp.tools.gpu_stream_check --device cpu   # the same sequence on the CPU (no streams)

The sequence (``scenario``, which tests/core/test_gpu_path.py drives on a CPU stand-in of
CUDA too), on a "forward" stream that is not the one the bank was built on (as under
SGLang's overlap scheduler): random decode batches of groups of mixed sizes (several size
buckets), rows without a slot, groups ending and new ones moving into the lowest free slot
(a reused slot retires its old group first, as the runtime does: its steps issued, not done), a non-finite group now and then, and
idle turns that hand the bank a new base. Each training step first spins its stream for
``--sleep-cycles`` GPU cycles (``torch.cuda._sleep``), so a read that is not ordered after
the write it needs sees stale weights, a reset that is not ordered after a queued step sees
its slot overwritten, and a layout tensor freed before its step ran is reused by the next
batch's. The reference runs the same sequence inline with a device synchronisation after
every call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
from collections.abc import Iterator

import torch

from ..core import AsyncTrainer, BatchLayout, DistillerBank, ESampConfig, GroupStats

GROUPS = 8
SIZES = (1, 1, 2, 3, 4, 6, 9, 17)  # rows per group: several size buckets


def scenario(seed: int, steps: int, hidden: int, groups: int = GROUPS) -> Iterator[tuple[str, tuple]]:
    """Random decode steps, as (op, args): ("open", (slot, reused)) a new group moves into the
    lowest free slot; ("step", (row slots, src, tgt, the non-finite group's slot or None)) a
    batch, (rows, hidden) each on the host; ("idle", ()) an idle turn of the scheduler."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    live: dict[int, int] = {}  # slot -> its group's rows per step
    used: set[int] = set()
    for _ in range(steps):
        for slot in [s for s in live if rng.random() < 0.15]:
            del live[slot]
        free = [s for s in range(groups) if s not in live]
        while free and (not live or rng.random() < 0.3):
            slot = free.pop(0)
            live[slot] = rng.choice(SIZES)
            yield "open", (slot, slot in used)
            used.add(slot)
        row_slots = [s for s, n in live.items() for _ in range(n)] + [-1] * rng.randint(0, 3)
        rng.shuffle(row_slots)
        src, tgt = torch.randn(len(row_slots), hidden, generator=gen), torch.randn(len(row_slots), hidden, generator=gen)
        bad = rng.choice(list(live)) if rng.random() < 0.1 else None
        if bad is not None:
            tgt[row_slots.index(bad)] = float("nan")  # that group's step is not finite
        yield "step", (row_slots, src, tgt, bad)
        if rng.random() < 0.15:
            yield "idle", ()


def run(device: str, mode: str, steps: int, sleep_cycles: int, hidden: int = 256, seed: int = 0,
        distiller: str = "mlp") -> list[torch.Tensor]:
    """The predictions of every step, on the host."""
    cfg = ESampConfig(distiller=distiller, max_groups=GROUPS, intermediate=128, staleness=0, trainer=mode, seed=seed)
    bank = DistillerBank(cfg, hidden, device)
    stats = GroupStats(cfg.max_groups, device, bank.streams)
    trainer = AsyncTrainer(bank, stats, staleness=0, mode=mode)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda and mode == "inline" else (lambda: None)
    if cuda and sleep_cycles:
        train = bank.train_step

        def slow_train(*args):
            torch.cuda._sleep(sleep_cycles)  # on the trainer's stream: its writes land late
            return train(*args)

        bank.train_step = slow_train
    forward = torch.cuda.Stream() if cuda else None
    out = []
    for op, args in scenario(seed, steps, hidden):
        with torch.cuda.stream(forward) if cuda else contextlib.nullcontext():
            if op == "open":  # as the runtime does it: retire a reused slot's old group before its reset
                slot, reused = args
                if reused:
                    trainer.retire(slot)  # on CUDA: the old group's steps issued, not done
                bank.reset([slot])
                stats.clear([slot])
            elif op == "idle":  # a new base: slot 0's weights, or (a shared base, which running groups read) the current one scaled
                trainer.drain()
                bank.set_base({k: v * 1.01 for k, v in bank.base.items()} if bank.shares_base
                              else bank.read(torch.tensor([0], device=device))[0])
            else:
                row_slots, src, tgt, _ = args
                layout = BatchLayout.from_slots(row_slots, device)
                out.append(trainer.predict(layout, src.to(device)))
                sync()
                trainer.submit(layout, src.to(device), tgt.to(device))
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
    parser.add_argument("--distiller", default="mlp", choices=["mlp", "tail", "lowrank", "adapter"])
    parser.add_argument("--sleep-cycles", type=int, default=20_000_000, help="GPU cycles each training step waits first")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 2
    reference = run(args.device, "inline", args.steps, 0, distiller=args.distiller)
    threaded = run(args.device, "thread", args.steps, args.sleep_cycles, distiller=args.distiller)
    diffs = [float((a - b).abs().max()) for a, b in zip(reference, threaded)]
    bad = [i for i, d in enumerate(diffs) if not d <= 1e-4]  # NaN included
    print(json.dumps({"device": args.device, "steps": args.steps, "sleep_cycles": args.sleep_cycles,
                      "max_abs_diff": max(diffs), "mismatched_steps": bad, "ok": not bad}))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
