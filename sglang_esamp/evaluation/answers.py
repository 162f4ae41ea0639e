"""Final answers of math samples: extraction, comparison, and the scoring of n attempts.

A sample's answer is the content of its last \\boxed{...}, else the number after its last
"answer is" / "Answer:", else its last number. Two answers match when both parse as numbers
within 1e-6 (relative) or, failing that, when their normalised strings are equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_MARKED = re.compile(r"answer\s*(?:is|:)\s*\$?\s*(" + _NUM + ")", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANY_NUM = re.compile(_NUM)


def extract_answer(text: str) -> str | None:
    """The sample's final answer as a string, or None when it contains no answer at all."""
    marked = _BOXED.findall(text) or _MARKED.findall(text)
    if marked:
        return _clean(marked[-1])
    nums = _ANY_NUM.findall(text)
    return _clean(nums[-1]) if nums else None


def _clean(ans: str) -> str:
    ans = ans.strip().rstrip(".").replace(",", "")
    try:
        x = float(ans)
    except ValueError:
        return ans
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def answers_match(predicted: str | None, reference: str) -> bool:
    if predicted is None:
        return False
    try:
        p, r = float(predicted), float(reference.replace(",", ""))
    except ValueError:
        return _normalise(predicted) == _normalise(reference)
    return abs(p - r) <= 1e-6 * max(1.0, abs(r))


def _normalise(s: str) -> str:
    return re.sub(r"\s+|\\left|\\right|\$", "", s).lower()


@dataclass
class Scored:
    """n attempts at one problem: each one's final answer and whether it is right."""

    answers: list[str | None]
    correct: list[bool]

    @property
    def num_correct(self) -> int:
        return sum(self.correct)

    @property
    def distinct(self) -> int:
        return len({a for a in self.answers if a is not None})


def score_math(attempts: list[str], reference: str) -> Scored:
    answers = [extract_answer(a) for a in attempts]
    return Scored(answers, [answers_match(a, reference) for a in answers])
