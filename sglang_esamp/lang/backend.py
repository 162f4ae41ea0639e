"""A frontend backend for programs: a running server by URL, or one started here.

``open_backend(url)`` yields a ``RuntimeEndpoint``. Without a URL it starts the embedded
model with ``--enable-esamp`` (plus ``server_args``), warms its base distiller if needed,
and stops it on exit. The frontend's
chat template is chosen from the model path, and SGLang does not recognise the embedded
model's path, so a model whose tokenizer template is ChatML gets SGLang's ``chatml``.

Usage::

    with open_backend(args.url) as backend:
        state = program.run(question="...", backend=backend)
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import requests


def _chat_template_name(url: str) -> str | None:
    from sglang.lang.chat_template import get_chat_template_by_model_path

    model_path = requests.get(url + "/get_model_info", timeout=30).json()["model_path"]
    if get_chat_template_by_model_path(model_path).name != "default":
        return None
    config = Path(model_path) / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template", "") if config.exists() else ""
    return "chatml" if "<|im_start|>" in str(template) else None


@contextlib.contextmanager
def open_backend(url: str | None = None, server_args: list[str] | None = None):
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    if url:
        url = url.rstrip("/")
        try:
            template = _chat_template_name(url)
        except requests.RequestException as exc:
            raise SystemExit(f"cannot reach the SGLang server at {url}: {exc}") from None
        yield RuntimeEndpoint(url, chat_template_name=template)
        return
    from ..launch.calibrate import ensure_warm
    from ..launch.server import ServerProcess

    print("Starting the SGLang server with ESamp on the embedded model...", flush=True)
    with ServerProcess(["--enable-esamp", *(server_args or [])], progress=True) as server:
        ensure_warm(server.url)
        yield RuntimeEndpoint(server.url, chat_template_name=_chat_template_name(server.url))


def add_program_args(parser, n: int, max_new_tokens: int, temperature: float = 1.0, explore: float = 0.25) -> None:
    """The flags every program in ``programs/`` shares; ``explore`` is the program's default beta."""
    parser.add_argument("--url", default=None, help="a running server started with --enable-esamp; default: start one here")
    parser.add_argument("--n", type=int, default=n, help="samples per prompt (children of one fork)")
    parser.add_argument("--explore", type=float, default=explore, help="ESamp's beta for the explore pass")
    parser.add_argument("--temperature", type=float, default=temperature)
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--no-vanilla", action="store_true", help="skip the plain pass run beside the explore pass")


def program_cases(args) -> list[tuple[str, float | None]]:
    """(label, explore) for each pass a program runs: plain first, then explore."""
    if args.n < 1:
        raise SystemExit(f"--n must be >= 1; got {args.n}")
    if args.explore < 0:
        raise SystemExit(f"--explore must be >= 0; got {args.explore}")
    cases = [] if args.no_vanilla else [("vanilla", None)]
    return cases + [(f"explore={args.explore:g}", args.explore)]


def run_passes(program, batch: list[dict], args, cases: list[tuple[str, float | None]] | None = None):
    """Yield (label, states, seconds) for each pass of a program: ``cases`` (label, explore),
    by default plain then explore (``program_cases``). The whole batch goes at once, with a
    progress bar; sampling settings come from ``args``."""
    cases = program_cases(args) if cases is None else cases
    with open_backend(args.url) as backend:
        for label, explore in cases:
            print(f"\n== {label}: {len(batch)} prompts, n={args.n}", flush=True)
            t0 = time.monotonic()
            states = program.run_batch(
                batch, backend=backend, progress_bar=True, num_threads=len(batch),
                temperature=args.temperature, max_new_tokens=args.max_new_tokens, explore=explore,
            )
            yield label, states, time.monotonic() - t0
