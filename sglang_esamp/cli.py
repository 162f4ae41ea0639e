"""The ``sglang-esamp`` command.

Subcommands:

- ``serve [launch_server args...]``: the real SGLang HTTP server, with the embedded model
  unless ``--model-path`` is given and the CPU setup applied when there is no GPU.
- ``model-path``: print the embedded model's folder, converting it first if needed.
- ``demo``: start the server on the embedded model and answer one real request on
  ``/generate`` and one on ``/v1/completions``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from . import cpu
from .model_cache import AssetMissingError, embedded_model_path

logger = logging.getLogger(__name__)


def serve(argv: list[str]) -> None:
    """Replace this process with ``python -m sglang.launch_server`` and the filled-in args."""
    cpu.setup()
    if not any(a == "--model-path" or a.startswith("--model-path=") for a in argv):
        argv = ["--model-path", str(embedded_model_path())] + argv
    argv = argv + cpu.cli_defaults(argv)
    logger.info("Starting SGLang: %s", " ".join(argv))
    os.execvpe(sys.executable, [sys.executable, "-m", "sglang.launch_server", *argv], os.environ)


def demo(args: argparse.Namespace) -> None:
    import requests

    from .server import ServerProcess

    embedded_model_path()  # convert before the server's start timer runs
    prompt = "Q: A farmer has 12 sheep and buys 7 more. How many sheep does he have now?\nA:"
    print("Starting the SGLang server on the embedded model (SmolLM2-135M-Instruct)...", flush=True)
    t0 = time.monotonic()
    with ServerProcess() as server:
        print(f"Server up at {server.url} in {time.monotonic() - t0:.0f} s\n", flush=True)
        params = {"temperature": 0, "max_new_tokens": args.max_new_tokens}
        out = requests.post(server.url + "/generate", json={"text": prompt, "sampling_params": params}, timeout=300).json()
        print(f"/generate ({out['meta_info']['completion_tokens']} tokens, {out['meta_info']['e2e_latency']:.2f} s):")
        print(prompt + out["text"] + "\n")
        body = {"model": "default", "prompt": prompt, "max_tokens": args.max_new_tokens, "temperature": 1.0, "n": 3}
        comp = requests.post(server.url + "/v1/completions", json=body, timeout=300).json()
        print("/v1/completions, n=3 at temperature 1:")
        for choice in comp["choices"]:
            print(f"  [{choice['index']}] {choice['text'].strip()!r}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    parser = argparse.ArgumentParser(prog="sglang-esamp", description="Exploratory Sampling for SGLang")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start the SGLang HTTP server; other args go to sglang.launch_server", add_help=False)
    sub.add_parser("model-path", help="print the embedded model's folder, building it if needed")
    p_demo = sub.add_parser("demo", help="start the embedded model and answer real requests")
    p_demo.add_argument("--max-new-tokens", type=int, default=48)
    if argv and argv[0] == "serve":
        return serve(argv[1:])  # everything after "serve" belongs to launch_server
    args = parser.parse_args(argv)
    try:
        if args.command == "model-path":
            print(embedded_model_path())
        elif args.command == "demo":
            demo(args)
    except AssetMissingError as exc:
        parser.exit(2, f"sglang-esamp: error: {exc}\n")


if __name__ == "__main__":
    main()
