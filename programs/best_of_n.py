"""Best-of-n with a verifier: n attempts per problem fork from one state and explore
together; a verifier marks each attempt, and a problem counts as solved when any passes.

- math (gsm8k, svamp, mawps, math500, champ): exact numeric match with the reference;
- code (humaneval): the task's tests run on each completion in the sandbox (a subprocess
  with time and memory limits, no network, a temporary folder).

Prints, per problem, which attempts passed, then Pass@1 and Pass@n for the plain pass and
the explore pass.

    python programs/best_of_n.py --task svamp --limit 10 --n 8
    python programs/best_of_n.py --task humaneval --limit 5 --n 4 --url http://127.0.0.1:30000
"""

import argparse

from sglang_esamp.evaluation.answers import score_math
from sglang_esamp.evaluation.sandbox import check_humaneval
from sglang_esamp.evaluation.tasks import TASKS, load_task
from sglang_esamp.lang.backend import add_program_args, program_cases, run_passes
from sglang_esamp.lang.recipes import complete_code, solve_math


def verify(problem, state) -> list[bool]:
    if problem.kind == "code":
        return [check_humaneval(c, problem.meta).passed for c in state["completions"]]
    return score_math(state["attempts"], problem.answer).correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="svamp", choices=[t for t in TASKS if t != "creative"])
    parser.add_argument("--split", default="test", choices=("tune", "test", "all"))
    parser.add_argument("--limit", type=int, default=10, help="number of problems")
    add_program_args(parser, n=8, max_new_tokens=160, temperature=0.7)
    args = parser.parse_args()
    program_cases(args)  # flag errors before any server starts
    problems = load_task(args.task, args.split, args.limit)
    program = complete_code if problems[0].kind == "code" else solve_math
    batch = [dict(prompt=p.question, samples=args.n) if p.kind == "code" else dict(question=p.question, samples=args.n) for p in problems]
    summary = []
    for label, states, seconds in run_passes(program, batch, args):
        passed = [verify(p, st) for p, st in zip(problems, states)]
        for p, marks in zip(problems, passed):
            print(f"  {p.id:<24} {''.join('✓' if m else '·' for m in marks)}  {sum(marks)}/{args.n}")
        pass1 = sum(sum(m) for m in passed) / (len(problems) * args.n)
        passn = sum(any(m) for m in passed) / len(problems)
        summary.append((label, pass1, passn, seconds))
    print(f"\n| pass | Pass@1 | Pass@{args.n} | time |\n| --- | --- | --- | --- |")
    for label, pass1, passn, elapsed in summary:
        print(f"| {label} | {pass1:.1%} | {passn:.1%} | {elapsed:.0f} s |")


if __name__ == "__main__":
    main()
