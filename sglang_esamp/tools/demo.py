"""``sglang-esamp demo``: what ESamp changes on the embedded model, plain sampling beside
``explore``, in a few minutes on a CPU.

Both parts run on one server (the embedded model started here, or the one at ``--url``):

1. Stories: n continuations of a few held-out story openings (raw text, temperature 1),
   plain and with ``--story-explore``. Per method: the continuations' mean pairwise
   similarity (sentence embeddings; lower is more diverse), the distinct ideas among them
   (the Vendi score: the effective number of different continuations, 1 to n) and their
   perplexity under the model itself (scored untilted).
2. Chat: n answers to a few held-out short-answer chat requests (through the chat template,
   temperature 1), plain and with ``--story-explore`` and the server's defaults (stratified
   codes across the n answers): the distinct answers among them (embeddings at cosine 0.7)
   and the distinct first words, where independent draws collide most.
3. Word problems: best-of-n on MAWPS single-operation problems, plain and with
   ``--explore``: problems solved by any attempt, correct attempts, distinct answers.

Every part counts the degenerate samples (token soup or loops, ``evaluation/degeneracy.py``).

It prints both tables and writes a report to ``--out`` (``demo_report.py``).
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="use this running server (started with --enable-esamp) instead of starting one")
    parser.add_argument("--n", type=int, default=8, help="samples per story opening and attempts per problem")
    parser.add_argument("--stories", type=int, default=8, help="number of held-out story openings")
    parser.add_argument("--story-explore", type=float, default=1.0,
                        help="ESamp's beta on stories and chat (the value chosen for open-ended generation)")
    parser.add_argument("--story-tokens", type=int, default=64, help="tokens per continuation")
    parser.add_argument("--chats", type=int, default=6, help="number of held-out short-answer chat requests")
    parser.add_argument("--chat-tokens", type=int, default=48, help="tokens per chat answer")
    parser.add_argument("--problems", type=int, default=4, help="number of MAWPS single-operation problems")
    parser.add_argument("--explore", type=float, default=0.25, help="ESamp's beta on word problems (the value measured on math)")
    parser.add_argument("--temperature", type=float, default=0.7, help="temperature on word problems (stories use 1)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens per word-problem attempt")
    parser.add_argument("--out", default="esamp-demo", help="folder for report.md, diversity.png and results.json")


def _check(args: argparse.Namespace) -> None:
    for name in ("n", "stories", "story_tokens", "chats", "chat_tokens", "problems", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise SystemExit(f"sglang-esamp demo: error: --{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    for name in ("explore", "story_explore", "temperature"):
        if getattr(args, name) < 0:
            raise SystemExit(f"sglang-esamp demo: error: --{name.replace('_', '-')} must be >= 0; got {getattr(args, name)}")


def _pass(client, prompts, args, label: str, sampling: dict, instruction: str = "") -> tuple[list[list[dict]], list[list[float]], float]:
    """Every prompt's n samples at once, streamed into one progress bar of tokens, then each
    sample's mean negative log-likelihood under the model (untilted).
    Returns (samples per prompt, nll per prompt, seconds)."""
    t0 = time.monotonic()
    ids = [client.prompt_ids(p, instruction) for p in prompts]
    with tqdm(total=len(prompts) * args.n * sampling["max_new_tokens"], desc=label, unit="tok", mininterval=0.5) as bar, \
            ThreadPoolExecutor(len(prompts)) as pool:
        futures = [pool.submit(client.sample_streamed, i, args.n, sampling, bar.update) for i in ids]
        samples = [f.result() for f in futures]
        bar.total = bar.n  # samples that stopped early end the bar here
    nll = [[v for v in client.nll(i, [s["output_ids"] for s in ss]) if v is not None] for i, ss in zip(ids, samples)]
    return samples, nll, time.monotonic() - t0


def _story_pass(client, openings, args, label: str, explore: float | None) -> dict:
    from ..evaluation.degeneracy import is_degenerate
    from ..evaluation.diversity import embed, mean_pairwise_cosine, vendi

    sampling = {"temperature": 1.0, "max_new_tokens": args.story_tokens} | ({"explore": explore} if explore is not None else {})
    print(f"\n== stories, {label}: {len(openings)} openings, n={args.n}", flush=True)
    samples, nll, seconds = _pass(client, openings, args, label, sampling)
    per = []
    for ss, lls in zip(samples, nll):
        texts = [s["text"] for s in ss]
        kept = [t.strip() for t in texts if t.strip()]
        emb = embed(kept) if kept else np.zeros((0, 384))
        per.append({"texts": texts, "similarity": mean_pairwise_cosine(emb), "distinct_ideas": vendi(emb),
                    "ppl": math.exp(sum(lls) / len(lls)) if lls else float("nan"), "empty": args.n - len(kept),
                    "degenerate": sum(map(is_degenerate, texts))})
    return {"label": label, "explore": explore, "openings": per, "seconds": seconds}


def _chat_pass(client, prompts, args, label: str, explore: float | None) -> dict:
    from ..evaluation.degeneracy import distinct_k, first_words, is_degenerate
    from ..evaluation.diversity import embed

    sampling = {"temperature": 1.0, "max_new_tokens": args.chat_tokens} | ({"explore": explore} if explore is not None else {})
    print(f"\n== chat, {label}: {len(prompts)} requests, n={args.n}", flush=True)
    samples, _, seconds = _pass(client, prompts, args, label, sampling)
    per = []
    for ss in samples:
        texts = [s["text"].strip() for s in ss]
        kept = [t for t in texts if t]
        per.append({"texts": texts, "distinct": distinct_k(embed(kept)) if kept else 0, "first_words": first_words(kept),
                    "degenerate": sum(map(is_degenerate, texts))})
    return {"label": label, "explore": explore, "prompts": per, "seconds": seconds}


def _math_pass(client, problems, args, label: str, explore: float | None) -> dict:
    from ..evaluation.answers import score_math
    from ..evaluation.diversity import embed, mean_pairwise_cosine
    from ..lang.prompts import MATH_INSTRUCTION

    sampling = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens} | (
        {"explore": explore} if explore is not None else {})
    print(f"\n== word problems, {label}: {len(problems)} problems, n={args.n}", flush=True)
    samples, _, seconds = _pass(client, problems, args, label, sampling, MATH_INSTRUCTION)
    per = []
    for ss, p in zip(samples, problems):
        attempts = [s["text"] for s in ss]
        sc = score_math(attempts, p.answer)
        per.append({"id": p.id, "reference": p.answer, "answers": sc.answers, "correct": sc.num_correct, "distinct": sc.distinct,
                    "similarity": mean_pairwise_cosine(embed(attempts))})
        print(f"  {p.id:<10} reference {p.answer:>6}  answers {' '.join(a or '-' for a in sc.answers)}")
    return {"label": label, "explore": explore, "problems": per, "seconds": seconds}


def run(args: argparse.Namespace) -> None:
    from ..evaluation.client import EvalClient
    from ..evaluation.tasks import load_task
    from ..launch.server import server_url
    from .demo_report import chat_table, math_table, story_table, write_report

    _check(args)
    openings = load_task("creative", split="test", limit=args.stories)
    chats = load_task("chat", split="test", limit=args.chats)
    problems = [p for p in load_task("mawps", split="test") if p.meta["type"] == "singleop"][: args.problems]
    t0 = time.monotonic()
    with server_url(args.url, ["--enable-esamp"]) as url:
        client = EvalClient(url)
        stories = [_story_pass(client, openings, args, "plain T=1", None),
                   _story_pass(client, openings, args, f"explore={args.story_explore:g}", args.story_explore)]
        chat = [_chat_pass(client, chats, args, "plain T=1", None),
                _chat_pass(client, chats, args, f"explore={args.story_explore:g}", args.story_explore)]
        maths = [_math_pass(client, problems, args, f"plain T={args.temperature:g}", None),
                 _math_pass(client, problems, args, f"explore={args.explore:g}", args.explore)]
    results = {"model": Path(client.model_path).name, "server": args.url or "started here", "n": args.n,
               "story_tokens": args.story_tokens, "openings": [o.question for o in openings], "stories": stories,
               "chat_tokens": args.chat_tokens, "chat_prompts": [c.question for c in chats], "chat": chat,
               "math_temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "math": maths,
               "seconds": time.monotonic() - t0}
    print(f"\nStories: {len(openings)} held-out openings x {args.n} continuations of {args.story_tokens} tokens ({results['model']})\n")
    print(story_table(results))
    print(f"\nChat: {len(chats)} held-out short-answer requests x {args.n} answers of at most {args.chat_tokens} tokens\n")
    print(chat_table(results))
    print(f"\nBest-of-{args.n} on {len(problems)} MAWPS single-operation word problems ({results['model']})\n")
    print(math_table(results))
    report = write_report(Path(args.out), results)
    print("\n" + "\n".join(report.verdict))
    print(f"\nReport with the continuations side by side and the plot: {report.path}")
