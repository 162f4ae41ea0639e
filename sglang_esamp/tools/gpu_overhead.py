"""ESamp's per-step cost against a decode step of a 7B-shaped model, on a GPU without sglang.

Run from the repository root as ``python -m sglang_esamp.tools.gpu_overhead``: it needs only
torch and transformers (importing ``sglang_esamp.core`` imports no sglang). The model is a
Llama-2-7B-shaped ``LlamaForCausalLM`` with random bf16 weights: this measures time, not quality.

It does three things:

1. Checks the CUDA trainer path: the side-stream ``thread`` trainer must end with the same
   distiller weights as the ``inline`` one on the same batches.
2. Times each ESamp piece alone: distiller predict, dense tilt (paper and residual),
   candidate tilt (residual, top-k 50), the stop cap over whole rows, the default tilt with
   its cap as the runtime runs it (the plausible form written at its changed tokens,
   ``estimate.tilt``), train step.
3. Times whole decode steps for each batch shape, and prints the overhead fraction:
   plain against ESamp (predict, the default tilt with its cap, submit to the side-stream
   trainer).

``--tiny`` shrinks the model so the script runs on a CPU in seconds (the test suite uses it);
``--shape smollm2 --dtype bfloat16`` times the embedded model's shape on a CPU, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sglang_esamp.core import (
    AsyncTrainer,
    BatchLayout,
    DistillerBank,
    ESampConfig,
    GroupStats,
    Head,
    StopCap,
    VocabMoments,
    rows_dot,
    tilt_candidates,
    tilt_dense,
)
from sglang_esamp.tools.estimate import tilt as default_tilt

SHAPE_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32)
SHAPE_SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3)  # the embedded model's shape: CPU figures in milliseconds
SHAPE_TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4)
HEADER = (f"{'distiller':>9} {'batch':>8} {'decode ms':>10} {'esamp ms':>9} {'overhead':>9} "
          f"{'predict':>8} {'tilt':>8} {'cand':>8} {'cap':>8} {'default':>8} {'train':>8}  (pieces: % of decode)")


def table_row(distiller: str, spec: str, case: dict) -> str:
    frac = case["pieces_fraction_of_decode"]
    return (
        f"{distiller:>9} {spec:>8} {case['decode_step_s'] * 1e3:>10.2f} {case['esamp_step_s'] * 1e3:>9.2f} {case['overhead']:>9.1%} "
        f"{frac['predict']:>8.2%} {frac['tilt_dense_residual']:>8.2%} {frac['tilt_candidates_top50']:>8.2%} {frac['stop_cap']:>8.2%} "
        f"{frac['tilt_default_with_cap']:>8.2%} {frac['train_step']:>8.2%}"
    )


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps: int) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def check_trainer_modes(device, hidden: int, steps: int = 12) -> float:
    """Largest weight difference between the thread (side stream) and inline trainers."""
    cfg = ESampConfig(max_groups=4, seed=1)
    banks = []
    for mode in ("thread", "inline"):
        bank = DistillerBank(cfg, hidden, device)
        trainer = AsyncTrainer(bank, GroupStats(cfg.max_groups, device, bank.streams), staleness=0, mode=mode)
        gen = torch.Generator(device="cpu").manual_seed(0)
        layout = BatchLayout.from_slots([0, 0, 1, 1, 1, 3], device)
        for _ in range(steps):
            src = torch.randn(6, hidden, generator=gen).to(device)
            tgt = torch.randn(6, hidden, generator=gen).to(device)
            trainer.predict(layout, src)
            trainer.submit(layout, src, tgt)
            src.mul_(0)  # the trainer must have copied its inputs
        trainer.drain()
        sync(device)
        trainer.close()
        banks.append(bank)
    return max(float((banks[0].params[k] - banks[1].params[k]).abs().max()) for k in banks[0].params)


def build_model(shape: dict, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, torch_dtype=dtype)
    return model.eval()


@torch.no_grad()
def measure(model, distiller: str, groups: int, n: int, ctx: int, steps: int, device, dtype) -> dict:
    rows, hidden = groups * n, model.config.hidden_size
    head = Head(model.lm_head.weight, fused=rows_dot.usable(model.lm_head.weight))  # (V, D), as the runtime makes it
    moments = VocabMoments.of(head)  # the residual fit's per-model constants
    cfg = ESampConfig(max_groups=groups, distiller=distiller)
    cap = StopCap([model.config.eos_token_id or 2], cfg.stop_cap, device)
    bank = DistillerBank(cfg, hidden, device)
    mode = "thread" if device.type == "cuda" else "inline"
    trainer = AsyncTrainer(bank, GroupStats(groups, device, bank.streams), staleness=1, mode=mode)
    layout = BatchLayout.from_slots([r // n for r in range(rows)], device)
    beta = torch.full((rows,), 0.25, device=device)

    prompt = torch.randint(0, model.config.vocab_size, (rows, ctx), device=device)
    out = model(prompt, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    token = out.logits[:, -1:].argmax(-1)

    temps = torch.ones(rows, device=device)

    def decode(form: str):
        """One decode step; form: "plain" or "esamp"."""
        nonlocal token
        o = model.model(token, past_key_values=cache, use_cache=True, output_hidden_states=True)
        h1, h = o.hidden_states[1][:, -1], o.last_hidden_state[:, -1]  # (rows, D) each
        logits = model.lm_head(h).float()  # (rows, V)
        if form == "esamp":
            h_hat = trainer.predict(layout, h1)  # (rows, D)
            default_tilt(logits, h, h_hat, head, beta, cfg, moments, layout, cap)  # as the runtime, at the server's defaults
        token = torch.multinomial(torch.softmax(logits, -1), 1)  # (rows, 1)
        if form == "esamp":
            trainer.submit(layout, h1, h)

    # whole steps, the cases interleaved in blocks so clock drift hits all alike
    def block(form: str) -> float:
        trainer.drain()
        sync(device)  # no training left running under the next block
        cache.crop(ctx)  # every block decodes at the same context length
        return timed(lambda: decode(form), device, steps)

    forms = ("plain", "esamp")
    for form in forms:  # warm-up: allocator, kernel choices, clocks
        block(form)
    times = {form: [] for form in forms}
    for _ in range(4):
        for form in forms:
            times[form].append(block(form))
    trainer.drain()
    sync(device)

    h1 = torch.randn(rows, hidden, device=device, dtype=dtype)
    h = torch.randn(rows, hidden, device=device, dtype=dtype)
    logits = torch.randn(rows, model.config.vocab_size, device=device)
    h_hat = bank.predict(layout, h1)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.topk(50, -1).indices, True)
    tilted = tilt_dense(logits, h, h_hat, head, beta, "residual", moments)
    pieces = {
        "predict": timed(lambda: bank.predict(layout, h1), device, steps),
        "tilt_dense": timed(lambda: tilt_dense(logits, h, h_hat, head, beta, "paper"), device, steps),
        "tilt_dense_residual": timed(lambda: tilt_dense(logits, h, h_hat, head, beta, "residual", moments), device, steps),
        "tilt_candidates_top50": timed(lambda: tilt_candidates(logits, h, h_hat, head, beta, keep, "residual", moments), device, steps),
        "stop_cap": timed(lambda: cap(tilted.clone(), logits, temps), device, steps),
        "tilt_default_with_cap": timed(lambda: default_tilt(logits.clone(), h, h_hat, head, beta, cfg, moments, layout, cap),
                                       device, steps),
        "train_step": timed(lambda: bank.train_step(layout, h1, h), device, steps),
    }
    trainer.close()
    step = {form: min(t) for form, t in times.items()}
    return {
        "distiller": distiller, "groups": groups, "n": n, "rows": rows, "ctx": ctx,
        "decode_step_s": step["plain"], "esamp_step_s": step["esamp"], "overhead": step["esamp"] / step["plain"] - 1.0,
        "pieces_s": pieces,
        "pieces_fraction_of_decode": {k: v / step["plain"] for k, v in pieces.items()},
        "steps_trained": trainer.finished,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer 64-wide model: a CPU smoke run")
    parser.add_argument("--shape", choices=("7b", "smollm2"), default="7b", help="the model shape (smollm2: the embedded model's)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                        help="the model's dtype (default: bfloat16 on a GPU, float32 on a CPU)")
    parser.add_argument("--shapes", default="8x16,32x16", help="groups x n per batch, comma-separated")
    parser.add_argument("--distillers", default="tail,mlp", help="distiller kinds to time, comma-separated")
    parser.add_argument("--ctx", type=int, default=128, help="tokens already in each row's KV cache")
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions per measurement")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = SHAPE_TINY if args.tiny else SHAPE_SMOLLM2 if args.shape == "smollm2" else SHAPE_7B
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": name, "dtype": str(dtype), "torch": torch.__version__, "model": shape}
    diff = result["trainer_thread_vs_inline_max_abs_diff"] = check_trainer_modes(device, shape["hidden_size"])
    print(f"device {name}, {dtype}; thread vs inline trainer max |dw| = {diff:.2e}", flush=True)
    model = build_model(shape, device, dtype)
    result["cases"] = []
    print(HEADER)
    for distiller, spec in [(d, s) for s in args.shapes.split(",") for d in args.distillers.split(",")]:
        groups, n = (int(x) for x in spec.split("x"))
        case = measure(model, distiller, groups, n, args.ctx, args.steps, device, dtype)
        result["cases"].append(case)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        print(table_row(distiller, spec, case), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
