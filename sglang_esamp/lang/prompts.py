"""The prompt formats the programs and the evaluation share (no sglang import, so the
evaluation can build the same prompts without loading the frontend)."""

MATH_INSTRUCTION = "Solve the problem step by step. End with: The answer is <number>."
CODE_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]  # a HumanEval completion ends at the next top-level line
