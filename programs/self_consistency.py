"""Self-consistency: n reasoning paths per problem, their final answers put to a majority
vote (Maj@n). Shows each problem's vote distribution, plain and with explore.

    python programs/self_consistency.py --task gsm8k --limit 10 --n 8
"""

import argparse
from collections import Counter

from sglang_esamp.evaluation.answers import answers_match, score_math
from sglang_esamp.evaluation.metrics import majority
from sglang_esamp.evaluation.tasks import load_task
from sglang_esamp.lang.backend import add_program_args, program_cases, run_passes
from sglang_esamp.lang.recipes import solve_math


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="svamp", choices=("gsm8k", "svamp", "mawps", "math500", "champ"))
    parser.add_argument("--split", default="test", choices=("tune", "test", "all"))
    parser.add_argument("--limit", type=int, default=10, help="number of problems")
    add_program_args(parser, n=8, max_new_tokens=160, temperature=0.7)
    args = parser.parse_args()
    program_cases(args)  # flag errors before any server starts
    problems = load_task(args.task, args.split, args.limit)
    summary = []
    for label, states, seconds in run_passes(solve_math, [dict(question=p.question, samples=args.n) for p in problems], args):
        right = 0
        for p, st in zip(problems, states):
            answers = score_math(st["attempts"], p.answer).answers
            vote = majority(answers)
            ok = answers_match(vote, p.answer)
            right += ok
            votes = ", ".join(f"{a}×{c}" for a, c in Counter(a or "none" for a in answers).most_common())
            print(f"  {p.id:<20} {'✓' if ok else '✗'} vote {vote} (reference {p.answer})  [{votes}]")
        summary.append((label, right / len(problems), seconds))
    print(f"\n| pass | Maj@{args.n} | time |\n| --- | --- | --- |")
    for label, acc, elapsed in summary:
        print(f"| {label} | {acc:.1%} | {elapsed:.0f} s |")


if __name__ == "__main__":
    main()
