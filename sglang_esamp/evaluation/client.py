"""HTTP calls the evaluation makes: n samples for one prompt, and their log-likelihood
under the reference model (the same server, no tilt).

Prompts travel as token ids, built here with the model's own tokenizer (its chat template
for math), so the scoring request sees exactly the tokens the samples were drawn after.
"""

from __future__ import annotations

import functools
import json
import math

import requests

from .tasks import Problem

TIMEOUT = 3600.0


def prompt_ids(tokenizer, problem: Problem, instruction: str) -> list[int]:
    """Math: the chat template around question + instruction; chat: around the question, as
    the OpenAI chat route builds it. Code, creative: raw text."""
    if problem.kind in ("math", "chat"):
        content = f"{problem.question}\n{instruction}" if problem.kind == "math" else problem.question
        messages = [{"role": "user", "content": content}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(problem.question, add_special_tokens=False)["input_ids"]


class EvalClient:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        try:
            info = requests.get(self.url + "/get_model_info", timeout=30).json()
        except requests.RequestException as exc:
            raise SystemExit(f"cannot reach the SGLang server at {self.url}: {exc}") from None
        self.model_path = info["model_path"]

    @functools.cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_path)

    def prompt_ids(self, problem: Problem, instruction: str) -> list[int]:
        return prompt_ids(self.tokenizer, problem, instruction)

    def _post(self, body: dict):
        res = requests.post(self.url + "/generate", json=body, timeout=TIMEOUT)
        if res.status_code != 200:
            raise RuntimeError(f"the server refused a request ({res.status_code}): {res.text[:500]}")
        return res.json()

    def sample(self, ids: list[int], n: int, sampling: dict, extra: dict) -> list[dict]:
        """n samples: text, output_ids, finish reason, tokens, ESamp metadata (or None)."""
        out = self._post({"input_ids": ids, "sampling_params": {**sampling, "n": n}, **extra})
        out = out if isinstance(out, list) else [out]
        return [
            {
                "text": o["text"],
                "output_ids": o["output_ids"],
                "finish": (o["meta_info"].get("finish_reason") or {}).get("type"),
                "tokens": o["meta_info"]["completion_tokens"],
                "esamp": o["meta_info"].get("esamp"),
            }
            for o in out
        ]

    def sample_streamed(self, ids: list[int], n: int, sampling: dict, on_tokens) -> list[dict]:
        """``sample`` (without the metadata, which streams do not carry), streamed so that
        ``on_tokens(k)`` hears of every k new tokens as they come."""
        body = {"input_ids": ids, "sampling_params": {**sampling, "n": n}, "stream": True}
        last: dict[int, dict] = {}
        with requests.post(self.url + "/generate", json=body, timeout=TIMEOUT, stream=True) as res:
            if res.status_code != 200:
                raise RuntimeError(f"the server refused a request ({res.status_code}): {res.text[:500]}")
            for line in res.iter_lines():
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if "error" in chunk:
                    raise RuntimeError(f"the server failed a request: {chunk['error']}")
                index = chunk.get("index", 0)
                seen = last[index]["meta_info"]["completion_tokens"] if index in last else 0
                on_tokens(chunk["meta_info"]["completion_tokens"] - seen)
                last[index] = chunk
        return [
            {"text": o["text"], "output_ids": o["output_ids"], "finish": (o["meta_info"].get("finish_reason") or {}).get("type"),
             "tokens": o["meta_info"]["completion_tokens"]}
            for _, o in sorted(last.items())
        ]

    def nll(self, ids: list[int], outputs: list[list[int]]) -> list[float | None]:
        """Mean negative log-likelihood per token of each output after ``ids``; None if empty."""
        scored = [o for o in outputs if o]
        if not scored:
            return [None] * len(outputs)
        res = self._post({
            "input_ids": [ids + o for o in scored], "sampling_params": {"max_new_tokens": 0},
            "return_logprob": True, "logprob_start_len": len(ids) - 1,
        })
        res = res if isinstance(res, list) else [res]
        token_lps = [r["meta_info"]["input_token_logprobs"][1:] for r in res]  # each: the output's tokens
        values = iter(-sum(lp for lp, _, _ in lps) / len(lps) for lps in token_lps)
        out = [next(values) if o else None for o in outputs]
        return [v if v is None or math.isfinite(v) else None for v in out]
