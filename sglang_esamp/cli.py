"""The ``sglang-esamp`` command.

Subcommands:

- ``serve [launch_server args...]``: the real SGLang HTTP server, with the embedded model
  unless ``--model-path`` is given and the CPU setup applied when there is no GPU.
- ``model-path``: print the embedded model's folder, converting it first if needed.
- ``demo``: start the embedded model with ESamp on and run best-of-n on a few MAWPS
  single-operation word problems, plain and with explore; print a side-by-side table.
- ``eval``: every sampling method on the same problems of one task; report and plots.
- ``eval-report DIR``: the report of what an eval folder holds so far (an interrupted run too).
- ``eval-summary``: the headline numbers of several eval folders in one table.
- ``eval-compare NEW OLD``: paired differences of two methods (``FOLDER:METHOD`` each),
  across folders too, over the problems both hold.
- ``bench``: throughput of vanilla and ESamp on one server, interleaved.
- ``calibrate [--url URL | --model-path P [--esamp-* flags]]``: send a server the shipped
  calibration prompts, so that it fits and saves the base distiller that ``--esamp-init
  calibrated`` starts every group from before real traffic arrives.
- ``init-study``: a group distiller's error over its first decode steps, for each init,
  replayed offline on the model's own samples.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from .evaluation.methods import BASE_METHODS
from .evaluation.tasks import SPLITS, TASKS
from .launch import cpu
from .launch.calibrate import warn_if_cold
from .launch.model_cache import AssetMissingError, embedded_model_path
from .launch.server import server_url
from .runtime.launcher import FORK_ENV

logger = logging.getLogger(__name__)


def serve(argv: list[str]) -> None:
    """Replace this process with ``python -m sglang.launch_server`` and the filled-in args."""
    if cpu.setup():
        os.environ.setdefault(FORK_ENV, "1")  # the launcher forks its children: no second import of SGLang
    if not any(a == "--model-path" or a.startswith("--model-path=") for a in argv):
        argv = ["--model-path", str(embedded_model_path())] + argv
    argv = argv + cpu.cli_defaults(argv)
    bind = cpu.bind_ranks(argv)
    if bind:
        logger.info("SGLANG_CPU_OMP_THREADS_BIND=%s (one share of the cores per rank)", bind)
    logger.info("Starting SGLang: %s", " ".join(argv))
    os.execvpe(sys.executable, [sys.executable, "-m", "sglang.launch_server", *argv], os.environ)


def evaluate(args: argparse.Namespace) -> None:
    from .evaluation.methods import parse_methods
    from .evaluation.tasks import load_task

    try:
        explore = [float(x) for x in args.explore.split(",") if x.strip()]
        methods = parse_methods(args.methods, explore, args.min_p, args.temperature, args.top_p)
    except ValueError as exc:
        raise SystemExit(f"sglang-esamp eval: error: {exc}") from None
    if args.n < 1 or args.concurrency < 1:
        raise SystemExit("sglang-esamp eval: error: --n and --concurrency must be >= 1")
    kind = load_task(args.task, limit=1)[0].kind
    if args.url and args.server_args:
        raise SystemExit("sglang-esamp eval: error: --server-args applies only to a server started here (no --url)")
    from .evaluation.harness import DEFAULT_TOKENS, EvalConfig, run_eval
    from .evaluation.report import aggregate, write_report

    cfg = EvalConfig(args.task, args.split, args.limit, args.n, methods, args.max_new_tokens or DEFAULT_TOKENS[kind], args.concurrency,
                     args.server_args)
    out = Path(args.out)
    with server_url(args.url, ["--enable-esamp", "--enable-custom-logit-processor", *shlex.split(args.server_args)]) as url:
        if args.url:
            warn_if_cold(url)
        run_eval(url, cfg, out)
    results = aggregate(out)
    write_report(out, results)
    print((out / "report.md").read_text())


def eval_report(folder: str) -> None:
    from .evaluation.report import aggregate, write_report

    out = Path(folder)
    if not (out / "config.json").is_file() or not any((out / name).is_file() for name in ("samples.jsonl", "samples.jsonl.gz")):
        raise SystemExit(f"sglang-esamp eval-report: error: {out} is not an eval folder (no config.json and samples.jsonl)")
    write_report(out, aggregate(out))
    print((out / "report.md").read_text())


def bench(args: argparse.Namespace) -> None:
    import json

    from .tools.bench import print_table, run_bench

    for flag in ("prompts", "n", "max_new_tokens", "repeats", "hidden", "layers", "vocab", "context", "train_every", "intermediate",
                 "kv_dim"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise SystemExit(f"sglang-esamp bench: error: --{flag.replace('_', '-')} must be >= 1")
    if args.estimate:
        from .tools.estimate import MODELS, estimate, table

        try:
            groups = [int(g) for g in args.groups.split(",")]
        except ValueError:
            raise SystemExit(f"sglang-esamp bench: error: --groups must be comma-separated integers; got {args.groups!r}") from None
        models = [m.strip() for m in args.model.split(",")]
        if min(groups) < 1:
            raise SystemExit(f"sglang-esamp bench: error: --groups must be >= 1; got {args.groups!r}")
        if unknown := [m for m in models if m not in MODELS]:
            raise SystemExit(f"sglang-esamp bench: error: --model must be among {', '.join(MODELS)}; got {', '.join(unknown)}")
        overrides = {k: getattr(args, k) for k in ("hidden", "layers", "vocab", "intermediate", "kv_dim") if getattr(args, k) is not None}
        try:
            results = [estimate(**(MODELS[m] | overrides), groups=g, n=args.n, distiller=d.strip(), context=args.context,
                                train_every=args.train_every, optimizer=args.optimizer)
                       for m in models for g in groups for d in args.distiller.split(",")]
        except ValueError as exc:
            raise SystemExit(f"sglang-esamp bench: error: {exc}") from None
        print(json.dumps(results) if args.json else table(results))
        return
    with server_url(args.url, ["--enable-esamp"]) as url:
        if args.url:
            warn_if_cold(url)
        result = run_bench(url, args.prompts, args.n, args.max_new_tokens, args.repeats, args.explore)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


def calibrate(args: argparse.Namespace) -> None:
    from .launch.calibrate import warm
    from .runtime import flags

    if args.url and (args.model_path or args.esamp_flags):
        raise SystemExit("sglang-esamp calibrate: error: --model-path and --esamp-* flags apply only to a server started here (no --url)")
    strict = argparse.ArgumentParser(prog="sglang-esamp calibrate")
    flags.add_arguments(strict)
    strict.parse_args(["--enable-esamp", *args.esamp_flags])  # exits 2 naming an unknown flag
    server_args = ["--enable-esamp", *args.esamp_flags] + (["--model-path", args.model_path] if args.model_path else [])
    t0 = time.monotonic()
    with server_url(args.url, server_args, warm_base=False) as url:
        base = warm(url)
    print(f"base distiller: {base['path']}")
    if base["rounds"] == 0:
        print(f"the server is warm: its base distiller is already fitted ({base['steps']} steps on {base['rows']} rows)")
        return
    print(f"{base['steps']} steps on {base['rows']} rows of the server's own decoding, {base['rounds']} round(s) of prompts, "
          f"{time.monotonic() - t0:.0f} s")


def init_study(args: argparse.Namespace) -> None:
    from .core.config import INIT_KINDS
    from .runtime import flags
    from .tools.init_study import parse_variants, run, table

    try:
        cfg = flags.from_namespace(args)
    except ValueError as exc:
        raise SystemExit(f"sglang-esamp init-study: error: {exc}") from None
    model = args.model_path or str(embedded_model_path())
    inits = [i.strip() for i in args.inits.split(",") if i.strip()] if args.inits else list(INIT_KINDS)
    try:
        steps = [int(k) for k in args.prompt_steps.split(",")] if args.prompt_steps else None
        if steps and min(steps) < 1:
            raise ValueError(f"--prompt-steps must be positive integers; got {args.prompt_steps}")
        vary = parse_variants(args.vary) if args.vary else None
        result = run(model, args.task, args.split, args.limit, args.n, args.max_new_tokens, args.min_p, inits, cfg,
                     Path(args.out) if args.out else None, prompt_steps=steps, vary=vary)
    except ValueError as exc:
        raise SystemExit(f"sglang-esamp init-study: error: {exc}") from None
    print(table(result))
    print(f"{result['problems']} prompts x n={result['n']}, {result['seconds']:.0f} s")


def _add_eval_parsers(sub) -> None:
    p = sub.add_parser("eval", help="quality: Pass@k, Maj@k, diversity, perplexity per sampling method")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--split", default="test", choices=SPLITS, help="tune: first half of the data; test: second half")
    p.add_argument("--methods", default="vanilla,min_p,esamp,matched", help=f"comma-separated, from {', '.join(BASE_METHODS)}")
    p.add_argument("--explore", default="0.5", help="comma-separated beta values for 'esamp'")
    p.add_argument("--min-p", type=float, default=0.0, help="a min-p floor for every method (0: none)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the temperature of every method that samples at 1 (matched@B: this / (1 + B); top_p keeps 0.8)")
    p.add_argument("--top-p", type=float, default=1.0, help="a top-p ceiling for every method (1: none)")
    p.add_argument("--n", type=int, default=16, help="samples per problem")
    p.add_argument("--limit", type=int, default=None, help="first N problems of the split")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 256 for math and code, 96 for creative, 64 for chat")
    p.add_argument("--concurrency", type=int, default=4, help="problems in flight at once")
    p.add_argument("--out", required=True, help="output folder; rerunning with the same folder resumes")
    p.add_argument("--url", default=None, help="a running server with --enable-esamp (and --enable-custom-logit-processor for fire/edt)")
    p.add_argument("--server-args", default="", help='extra flags for the server started here, e.g. "--esamp-tilt residual"')
    p = sub.add_parser("eval-report", help="write the report of an eval folder from the problems it holds so far")
    p.add_argument("dir", help="an eval --out folder, finished or interrupted")
    p = sub.add_parser("eval-summary", help="one table of the headline numbers of several eval folders (ablations)")
    p.add_argument("dirs", nargs="+", help="--out folders of finished eval runs")
    p = sub.add_parser("eval-compare", help="paired per-problem differences of two methods, each FOLDER:METHOD")
    p.add_argument("new", help="FOLDER:METHOD, e.g. runs/tail:esamp@0.5")
    p.add_argument("old", help="FOLDER:METHOD, the reference, e.g. runs/base:vanilla")


def _add_tool_parsers(sub) -> None:
    from .runtime import flags
    from .tools import demo

    demo.add_arguments(sub.add_parser("demo", help="stories and word problems, plain beside explore, with a report"))
    p = sub.add_parser("bench", help="throughput: vanilla vs ESamp (explore 0 and >0) on one server")
    p.add_argument("--prompts", type=int, default=4, help="B: prompts sent at once")
    p.add_argument("--n", type=int, default=16, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128, help="output length (ignore_eos)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    p.add_argument("--explore", type=float, default=0.5)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--url", default=None, help="a running server with --enable-esamp")
    p.add_argument("--estimate", action="store_true",
                   help="no server: ESamp's bytes, FLOPs, H100 roofline time and kernel launches per decode step on the "
                        "shapes below, as a share of the model's step")
    p.add_argument("--model", default="llama-2-7b",
                   help="--estimate: comma-separated model shapes: llama-2-7b, qwen2.5-7b, llama-3-70b (the flags below override them)")
    p.add_argument("--hidden", type=int, default=None, help="--estimate: the model's hidden size")
    p.add_argument("--layers", type=int, default=None, help="--estimate: decoder layers")
    p.add_argument("--vocab", type=int, default=None, help="--estimate: vocabulary")
    p.add_argument("--groups", default="32", help="--estimate: comma-separated group counts, each group of --n rows")
    p.add_argument("--context", type=int, default=128, help="--estimate: tokens of context per row (the KV cache read)")
    p.add_argument("--intermediate", type=int, default=None, help="--estimate: the model's MLP width")
    p.add_argument("--kv-dim", type=int, default=None, help="--estimate: key/value width per layer (less than hidden with GQA)")
    p.add_argument("--distiller", default="tail,mlp", help="--estimate: comma-separated distiller kinds")
    p.add_argument("--optimizer", default=None, help="--estimate: the groups' optimizer, sgd or adam (default: the server's)")
    p.add_argument("--train-every", type=int, default=1, help="--estimate: decode steps per training step")
    p = sub.add_parser("calibrate", help="warm a server's base distiller (--esamp-init calibrated) with the shipped prompts")
    p.add_argument("--url", default=None, help="a running server with --enable-esamp (default: start the model here)")
    p.add_argument("--model-path", default=None, help="without --url: a Hugging Face model folder (default: the embedded model)")
    p.add_argument("esamp_flags", nargs=argparse.REMAINDER,
                   help="without --url: --esamp-* flags that shape the distiller (distiller, intermediate, rank, source-layer, seed)")
    p = sub.add_parser("init-study", help="a group distiller's error over its first decode steps, per --esamp-init (offline)")
    p.add_argument("--model-path", default=None, help="a Hugging Face model folder (default: the embedded model)")
    p.add_argument("--task", choices=TASKS, default="svamp")
    p.add_argument("--split", choices=SPLITS, default="tune")
    p.add_argument("--limit", type=int, default=8, help="prompts")
    p.add_argument("--n", type=int, default=8, help="samples per prompt: one group")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--min-p", type=float, default=0.1, help="min-p of the plain sampling that writes the samples (0: none)")
    p.add_argument("--inits", default=None, help="comma-separated --esamp-init values to compare (default: all)")
    p.add_argument("--prompt-steps", default=None,
                   help="comma-separated step counts to try for the prompt inits (default: --esamp-prompt-steps)")
    p.add_argument("--vary", default=None,
                   help='training variants to compare, ";"-separated, each FIELD=VALUE[,FIELD=VALUE] of the ESamp config, '
                        'e.g. "train_every=1;train_every=4;optimizer=sgd,sgd_lr=1"')
    p.add_argument("--out", default=None, help="folder for results.json and rel_err.png")
    flags.add_arguments(p, enable_flag=False)  # the distiller's shape, lr, prompt steps, seed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sglang-esamp", description="Exploratory Sampling for SGLang")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start the SGLang HTTP server; other args go to sglang.launch_server", add_help=False)
    sub.add_parser("model-path", help="print the embedded model's folder, building it if needed")
    _add_eval_parsers(sub)
    _add_tool_parsers(sub)
    return parser


def _eval_summary(args: argparse.Namespace) -> None:
    from .evaluation.report import summary_table

    print(summary_table(args.dirs))


def _demo(args: argparse.Namespace) -> None:
    from .tools import demo

    demo.run(args)


def _eval_compare(args: argparse.Namespace) -> None:
    from .evaluation.report import compare_table

    try:
        print(compare_table(args.new, args.old))
    except ValueError as exc:
        raise SystemExit(f"sglang-esamp eval-compare: error: {exc}") from None


COMMANDS = {
    "model-path": lambda args: print(embedded_model_path()),
    "demo": _demo,
    "eval": evaluate,
    "eval-report": lambda args: eval_report(args.dir),
    "eval-summary": _eval_summary,
    "eval-compare": _eval_compare,
    "bench": bench,
    "calibrate": calibrate,
    "init-study": init_study,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    cpu.setup()  # a process starts here: before sglang is first imported, on machines without a GPU
    if argv and argv[0] == "serve":
        return serve(argv[1:])  # everything after "serve" belongs to launch_server
    # a terminated command unwinds like an interrupted one, so the server it started stops with it
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = build_parser()
    if argv and argv[0] == "calibrate":  # its --esamp-* flags are checked by the command itself
        args, extra = parser.parse_known_args(argv)
        args.esamp_flags = [*extra, *args.esamp_flags]
    else:
        args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except AssetMissingError as exc:
        parser.exit(2, f"sglang-esamp: error: {exc}\n")


if __name__ == "__main__":
    main()
