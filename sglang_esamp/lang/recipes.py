"""The frontend programs behind ``programs/`` and ``sglang-esamp demo`` (their scoring is in
``evaluation/answers.py``).

Each function forks ``samples`` children from one state. Sampling settings come from the
run, as SGLang's frontend intends: ``solve_math.run(question=q, samples=8, temperature=1.0,
max_new_tokens=160, explore=0.5)``. With ``explore`` set, the children share one
exploration group (docs/frontend.md); without it they sample plainly.

- ``solve_math``: n chat attempts at a word problem, each ending "The answer is N".
- ``complete_code``: n raw completions of a HumanEval-style function prompt.
- ``continue_story``: n raw continuations of a story opening (no chat template).
- ``plan_then_solve``: n diverse plans, then one greedy answer that reads them all.
"""

from __future__ import annotations

import sglang as sgl

from .prompts import CODE_STOP, MATH_INSTRUCTION


@sgl.function
def solve_math(s, question, samples):
    s += sgl.user(f"{question}\n{MATH_INSTRUCTION}")
    forks = s.fork(samples)
    forks += sgl.assistant(sgl.gen("attempt"))
    s["attempts"] = [f["attempt"] for f in forks]


@sgl.function
def complete_code(s, prompt, samples):
    s += prompt
    forks = s.fork(samples)
    forks += sgl.gen("completion", stop=CODE_STOP)
    s["completions"] = [f["completion"] for f in forks]


@sgl.function
def continue_story(s, opening, samples):
    s += opening
    forks = s.fork(samples)
    forks += sgl.gen("continuation")
    s["continuations"] = [f["continuation"] for f in forks]


@sgl.function
def plan_then_solve(s, question, samples, plan_tokens=64):
    s += sgl.user(f"{question}\nIn two or three sentences, describe a plan to solve this. Do not solve it yet.")
    forks = s.fork(samples)
    forks += sgl.assistant(sgl.gen("plan", max_tokens=plan_tokens))
    plans = [f["plan"].strip() for f in forks]
    s["plans"] = plans
    s += sgl.assistant("Possible plans:\n" + "\n".join(f"{i + 1}. {p}" for i, p in enumerate(plans)))
    s += sgl.user(f"Use the most promising plan to solve the problem. {MATH_INSTRUCTION}")
    s += sgl.assistant(sgl.gen("final", temperature=0.0, explore=0.0))  # one greedy answer, untilted
