"""Parallel reasoning: n plans per problem, forked and explored together, then joined into
one greedy final answer that reads them all. Prints the plans, the final answer and whether
it is right, plain and with explore.

    python programs/parallel_reasoning.py --task svamp --limit 5 --n 4
"""

import argparse

from sglang_esamp.evaluation.answers import answers_match, extract_answer
from sglang_esamp.evaluation.tasks import load_task
from sglang_esamp.lang.backend import add_program_args, program_cases, run_passes
from sglang_esamp.lang.recipes import plan_then_solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="svamp", choices=("gsm8k", "svamp", "mawps", "math500", "champ"))
    parser.add_argument("--split", default="test", choices=("tune", "test", "all"))
    parser.add_argument("--limit", type=int, default=5, help="number of problems")
    parser.add_argument("--plan-tokens", type=int, default=64, help="length of each plan")
    add_program_args(parser, n=4, max_new_tokens=160)
    args = parser.parse_args()
    program_cases(args)  # flag errors before any server starts
    problems = load_task(args.task, args.split, args.limit)
    batch = [dict(question=p.question, samples=args.n, plan_tokens=args.plan_tokens) for p in problems]
    summary = []
    for label, states, seconds in run_passes(plan_then_solve, batch, args):
        right = 0
        for p, st in zip(problems, states):
            answer = extract_answer(st["final"])
            ok = answers_match(answer, p.answer)
            right += ok
            print(f"\n  {p.id}: {p.question[:100]}")
            for i, plan in enumerate(st["plans"]):
                print(f"    plan {i + 1}: {plan[:120]!r}")
            print(f"    final: {answer} (reference {p.answer}) {'✓' if ok else '✗'}")
        summary.append((label, right / len(problems), seconds))
    print("\n| pass | accuracy of the joined answer | time |\n| --- | --- | --- |")
    for label, acc, elapsed in summary:
        print(f"| {label} | {acc:.1%} | {elapsed:.0f} s |")


if __name__ == "__main__":
    main()
