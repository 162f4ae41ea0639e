"""``sglang-esamp demo``: best-of-n on a few real word problems, plain and with explore, side by side.

The embedded model (or the server at ``--url``) answers MAWPS single-operation problems n
times each, once at plain temperature and once with ``explore``; a table then shows, per
method, the problems solved by any attempt, the share of correct attempts, the distinct
answers and the attempts' mean pairwise similarity.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="use this running server (started with --enable-esamp) instead of starting one")
    parser.add_argument("--problems", type=int, default=6, help="number of MAWPS single-operation problems")
    parser.add_argument("--n", type=int, default=8, help="attempts per problem")
    parser.add_argument("--explore", type=float, default=0.25, help="ESamp's beta for the explore pass (the value measured on math)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=128)


def run(args: argparse.Namespace) -> None:
    from ..evaluation.answers import score_math
    from ..evaluation.diversity import embed, mean_pairwise_cosine
    from ..evaluation.tasks import load_task
    from ..lang.backend import run_passes
    from ..lang.recipes import solve_math
    from ..launch.model_cache import embedded_model_path

    problems = [p for p in load_task("mawps", split="test") if p.meta["type"] == "singleop"][: args.problems]
    if not args.url:
        embedded_model_path()  # convert before the server's start timer runs
    cases = [(f"vanilla T={args.temperature:g}", None), (f"esamp explore={args.explore:g}", args.explore)]
    batch = [dict(question=p.question, samples=args.n) for p in problems]
    rows = []
    for label, states, elapsed in run_passes(solve_math, batch, args, cases):
        scored = [score_math(st["attempts"], p.answer) for st, p in zip(states, problems)]
        sims = [mean_pairwise_cosine(embed(st["attempts"])) for st in states]
        for p, sc in zip(problems, scored):
            print(f"  {p.id:<10} reference {p.answer:>6}  answers {' '.join(a or '-' for a in sc.answers)}")
        rows.append((label, sum(sc.num_correct > 0 for sc in scored), sum(sc.num_correct for sc in scored) / (args.n * len(problems)),
                     sum(sc.distinct for sc in scored) / len(scored), sum(sims) / len(sims), elapsed))
    print(f"\nBest-of-{args.n} on {len(problems)} MAWPS single-operation word problems "
          "(SmolLM2-135M-Instruct unless --url says otherwise)\n")
    print(f"| {'method':<20} | solved (pass@{args.n}) | correct samples | distinct answers | mean pairwise similarity | time |")
    print(f"| {'-' * 20} | --- | --- | --- | --- | --- |")
    for label, solved, frac, distinct, sim, elapsed in rows:
        print(f"| {label:<20} | {solved}/{len(problems)} | {frac:.0%} | {distinct:.1f} | {sim:.3f} | {elapsed:.0f} s |")
    print("\nDistinct answers: per problem, over the n attempts. Similarity: all-MiniLM-L6-v2 cosine, lower is more diverse.")
