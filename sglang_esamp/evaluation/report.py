"""Aggregate ``samples.jsonl`` into ``results.json``, ``report.md`` and two plots.

Per method, each metric is first computed per problem, then averaged over problems with a
95% bootstrap interval; "vs vanilla" and "vs matched" rows give the paired per-problem
difference with its interval, which is what separates a gain from noise.

Per-problem metrics:

- ``pass@k`` (unbiased estimator) for k = 1, 2, 4, ... n; ``maj@k`` (math); distinct answers;
- ``similarity``: mean pairwise cosine of all-MiniLM-L6-v2 embeddings of the non-empty
  samples (lower is more diverse); ``vendi`` over the same embeddings; ``similarity_clean``
  the same over the non-degenerate ones (``degeneracy.py``), which a soup of rare tokens
  cannot lower; ``distinct_k``: the answers' parts at cosine 0.7; ``first_words``: the
  share of distinct first words;
- ``degenerate``: share of samples that are token soup or a loop (``degeneracy.py``);
- ``ppl``: exp of the mean per-token negative log-likelihood of the samples under the
  reference model (the same server, untilted, temperature 1);
- ``tokens``; ``early_stop``: share ended by end-of-sequence or a stop string before
  ``max_new_tokens``; ``empty``: share with no visible text;
- ESamp methods: the distiller's relative error ``||h - f||^2 / ||h||^2`` and its step
  count when each sample finished.
"""

from __future__ import annotations

import gzip
import json
import math
import platform
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

import numpy as np

from .degeneracy import distinct_k, first_words, is_degenerate
from .diversity import embed, mean_pairwise_cosine, vendi
from .metrics import bootstrap_ci, ks_up_to, maj_at_k, nan_mean, paired_diff_ci, pass_at_k

HEADLINE = ("pass@1", "pass@n", "maj@n", "similarity", "similarity_clean", "distinct_k", "first_words", "vendi", "ppl",
            "degenerate", "empty", "early_stop")


def _per_problem(rec: dict, n: int, max_new_tokens: int) -> dict:
    samples = rec["samples"]
    texts = [s["text"].strip() for s in samples]
    nonempty = [t for t in texts if t]
    emb = embed(nonempty) if nonempty else np.zeros((0, 384))
    clean = np.array([not is_degenerate(t) for t in nonempty], dtype=bool)
    nll = [s["nll"] for s in samples if s.get("nll") is not None]
    row = {
        "similarity": mean_pairwise_cosine(emb),
        "similarity_clean": mean_pairwise_cosine(emb[clean]),
        "distinct_k": distinct_k(emb),
        "first_words": first_words(nonempty),
        "vendi": vendi(emb),
        "ppl": math.exp(sum(nll) / len(nll)) if nll else float("nan"),
        "tokens": sum(s["tokens"] for s in samples) / len(samples),
        "early_stop": sum(s["finish"] == "stop" and s["tokens"] < max_new_tokens for s in samples) / len(samples),
        "empty": (len(texts) - len(nonempty)) / len(texts),
        "degenerate": sum(map(is_degenerate, texts)) / len(texts),
        "seconds": rec["seconds"],
    }
    if "correct" in samples[0]:
        c = sum(s["correct"] for s in samples)
        for k in ks_up_to(n):
            row[f"pass@{k}"] = pass_at_k(n, c, k)
        row["pass@n"] = row[f"pass@{n}"]
    if "answer" in samples[0]:
        answers, correct = [s["answer"] for s in samples], [s["correct"] for s in samples]
        for k in ks_up_to(n):
            row[f"maj@{k}"] = maj_at_k(answers, correct, k)
        row["maj@n"] = row[f"maj@{n}"]
        row["distinct"] = len({a for a in answers if a is not None})
    meta = [s["esamp"] for s in samples if s.get("esamp")]
    if meta:
        row["rel_err"] = nan_mean([m.get("rel_err", float("nan")) for m in meta])
        row["steps"] = nan_mean([m.get("steps", float("nan")) for m in meta])
    return row


def open_samples(out: Path):
    """A run's ``samples.jsonl`` as text, or its gzip copy ``samples.jsonl.gz`` (the archived
    runs in docs/results)."""
    path = out / "samples.jsonl"
    return open(path) if path.is_file() else gzip.open(out / "samples.jsonl.gz", "rt")


def records(out: Path):
    """The run's (method, problem) records; a line cut by an interruption is skipped."""
    with open_samples(out) as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def aggregate(out: Path) -> dict:
    cfg = json.loads((out / "config.json").read_text())
    n, max_tokens = cfg["n"], cfg["max_new_tokens"]
    rows: dict[str, dict[str, dict]] = defaultdict(dict)  # method -> problem -> metrics
    for rec in records(out):
        rows[rec["method"]][rec["problem"]] = _per_problem(rec, n, max_tokens)
    methods = [m["name"] for m in cfg["methods"] if m["name"] in rows]
    common = sorted(set.intersection(*(set(rows[m]) for m in methods))) if methods else []
    results = {"config": cfg, "problems": len(common), "environment": _environment(), "methods": {}}
    for m in methods:
        per = [rows[m][p] for p in common]
        summary = {}
        for key in per[0] if per else []:
            values = [r.get(key, float("nan")) for r in per]
            mean, lo, hi = bootstrap_ci(values)
            summary[key] = {"mean": mean, "ci95": [lo, hi]}
        summary["seconds_total"] = sum(r["seconds"] for r in per)
        for ref in ("vanilla", "matched@" + m.split("@")[1] if m.startswith("esamp") else None):
            if ref and ref in rows and ref != m:
                summary[f"vs {ref}"] = {
                    key: dict(zip(("mean", "low", "high"), paired_diff_ci([rows[m][p].get(key, float("nan")) for p in common],
                                                                       [rows[ref][p].get(key, float("nan")) for p in common])))
                    for key in HEADLINE if key in per[0]
                }
        results["methods"][m] = summary
    return results


def _environment() -> dict:
    env = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    for pkg in ("sglang", "torch", "sglang-esamp"):
        try:
            env[pkg] = version(pkg)
        except Exception:  # not installed under that name
            env[pkg] = None
    return env


def _fmt(stat: dict | None, pct: bool) -> str:
    if not stat or stat["mean"] is None or math.isnan(stat["mean"]):
        return "-"
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}")
    return f"{f(stat['mean'])} [{f(stat['ci95'][0])}, {f(stat['ci95'][1])}]"


PCT = {"pass@1", "pass@n", "maj@n", "empty", "early_stop", "degenerate"}


def write_report(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    cfg, methods = results["config"], results["methods"]
    cols = [k for k in ("pass@1", "pass@n", "maj@n", "distinct", "similarity", "similarity_clean", "distinct_k", "first_words", "vendi",
                        "ppl", "tokens", "degenerate", "early_stop", "empty", "rel_err")
            if any(k in s for s in methods.values())]
    lines = [
        f"# {cfg['task']} ({cfg['split']} split): {results['problems']} problems, n = {cfg['n']}, max {cfg['max_new_tokens']} new tokens",
        "",
        "Mean over problems [95% bootstrap interval]. Percentages for pass, maj, degenerate, early stop and empty. "
        "similarity: mean pairwise cosine of non-empty samples (lower = more diverse); similarity_clean: the same over "
        "the samples that are not degenerate (token soup or a loop); distinct_k: answers that differ (cosine 0.7 or "
        "less); first_words: share of distinct first words; vendi: effective number of distinct samples; ppl: "
        "perplexity under the reference model.",
        "",
        "Sampling: " + "; ".join(f"{m['name']}: " + ", ".join(f"{k} {v}" for k, v in m["sampling"].items() if k != "custom_params")
                                 for m in cfg["methods"]) + ".",
        "",
        "| method | " + " | ".join(c.replace("@n", f"@{cfg['n']}") for c in cols) + " | time |",
        "| --- " * (len(cols) + 2) + "|",
    ]
    for name, s in methods.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(s.get(c), c in PCT) for c in cols) + f" | {s['seconds_total']:.0f} s |")
    diffs = [(name, ref, d) for name, s in methods.items() for ref, d in ((k[3:], v) for k, v in s.items() if k.startswith("vs "))]
    if diffs:
        keys = [k for k in HEADLINE if any(k in d for _, _, d in diffs)]
        lines += ["", "Paired differences (method minus reference, per problem) [95% interval]; "
                  "an interval that excludes 0 is a real difference at this size.", "",
                  "| method | vs | " + " | ".join(k.replace("@n", f"@{cfg['n']}") for k in keys) + " |", "| --- " * (len(keys) + 2) + "|"]
        for name, ref, d in diffs:
            cells = [_fmt({"mean": d[k]["mean"], "ci95": [d[k]["low"], d[k]["high"]]}, k in PCT) if k in d else "-" for k in keys]
            lines.append(f"| {name} | {ref} | " + " | ".join(cells) + " |")
    env = results["environment"]
    lines += ["", f"sglang {env['sglang']}, torch {env['torch']}, Python {env['python']} on {env['machine']}."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plots(out, results)


def _plots(out: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, methods = results["config"]["n"], results["methods"]
    ks = ks_up_to(n)
    if any("pass@1" in s for s in methods.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, s in methods.items():
            ax.plot(ks, [100 * s[f"pass@{k}"]["mean"] for k in ks], marker="o", label=name)
        ax.set(xscale="log", xlabel="k", ylabel="Pass@k (%)", title=f"{results['config']['task']}: Pass@k")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "passk.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in methods.items():
        x, y = s["ppl"], s["similarity"]
        ax.errorbar(x["mean"], y["mean"], xerr=[[x["mean"] - x["ci95"][0]], [x["ci95"][1] - x["mean"]]],
                    yerr=[[y["mean"] - y["ci95"][0]], [y["ci95"][1] - y["mean"]]], fmt="o", capsize=3, label=name)
    save_diversity_plot(fig, ax, out / "diversity.png", f"{results['config']['task']}: diversity vs perplexity",
                        "perplexity under the reference model")


def save_diversity_plot(fig, ax, path: Path, title: str, xlabel: str, legend_size: int = 8) -> None:
    """Label, lay out and save a diversity-against-perplexity figure (the eval report's, the demo's)."""
    import matplotlib.pyplot as plt

    ax.set(xlabel=xlabel, ylabel="mean pairwise cosine (lower = more diverse)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SUMMARY = ("similarity", "similarity_clean", "vendi", "ppl", "degenerate", "empty", "early_stop", "pass@1", "pass@n")


def summary_table(dirs: list[str]) -> str:
    """Markdown: one row per (run, method) of finished eval folders, with each run's server flags."""
    lines = ["| server flags | method | " + " | ".join(SUMMARY) + " |", "| --- " * (len(SUMMARY) + 2) + "|"]
    for d in dirs:
        res = json.loads((Path(d) / "results.json").read_text())
        flags = res["config"].get("server_args") or "(defaults)"
        for name, s in res["methods"].items():
            lines.append(f"| {flags} | {name} | " + " | ".join(_fmt(s.get(k), k in PCT) for k in SUMMARY) + " |")
    return "\n".join(lines)


def _method_rows(spec: str) -> tuple[str, dict[str, dict]]:
    """``FOLDER:METHOD`` -> (label, problem -> per-problem metrics) of that method's records."""
    folder, _, method = spec.rpartition(":")
    out = Path(folder)
    if not folder or not (out / "config.json").is_file():
        raise ValueError(f"{spec!r} is not FOLDER:METHOD with FOLDER an eval --out folder")
    cfg = json.loads((out / "config.json").read_text())
    rows = {rec["problem"]: _per_problem(rec, cfg["n"], cfg["max_new_tokens"]) for rec in records(out) if rec["method"] == method}
    if not rows:
        raise ValueError(f"{out} holds no samples of method {method!r}")
    return f"{out.name}:{method}", rows


def compare_table(new: str, old: str) -> str:
    """Markdown: paired per-problem differences of ``new`` minus ``old`` (each FOLDER:METHOD)
    over the problems both hold, for the headline metrics both have, with 95% intervals."""
    (a_name, a), (b_name, b) = _method_rows(new), _method_rows(old)
    common = sorted(set(a) & set(b))
    keys = [k for k in HEADLINE if k in a[common[0]] and k in b[common[0]]] if common else []
    lines = [f"{a_name} minus {b_name}, {len(common)} problems, mean [95% interval]:", "",
             "| metric | " + a_name + " | " + b_name + " | difference |", "| --- | --- | --- | --- |"]
    for k in keys:
        x, y = [a[p].get(k, float("nan")) for p in common], [b[p].get(k, float("nan")) for p in common]
        d = paired_diff_ci(x, y)
        fmt = (lambda v: f"{100 * v:.1f}") if k in PCT else (lambda v: f"{v:.3f}")
        diff = (lambda v: f"{100 * v:+.1f}") if k in PCT else (lambda v: f"{v:+.3f}")
        lines.append(f"| {k} | {fmt(nan_mean(x))} | {fmt(nan_mean(y))} | {diff(d[0])} [{diff(d[1])}, {diff(d[2])}] |")
    return "\n".join(lines)

