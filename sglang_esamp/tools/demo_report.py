"""The demo's tables, its plain-words verdict and its report folder.

``write_report(out, results)`` writes ``report.md`` (tables, verdict, plot, and every story
continuation and chat answer side by side, plain beside explore), ``diversity.png`` (per
opening: similarity against perplexity, a line from plain to explore) and ``results.json``.
``results`` is what ``demo.run`` gathered: two story passes, two chat passes and two
word-problem passes, plain first.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation.report import save_diversity_plot

EMBEDDED = "SmolLM2-135M-Instruct"


@dataclass
class Report:
    path: Path
    verdict: list[str]


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _story_means(p: dict) -> dict:
    per = p["openings"]
    return {k: _mean([o[k] for o in per]) for k in ("similarity", "distinct_ideas", "ppl")} | {
        k: sum(o[k] for o in per) for k in ("empty", "degenerate")}


def story_table(results: dict) -> str:
    n = results["n"]
    lines = [f"| method | mean pairwise similarity (lower = more diverse) | distinct ideas (Vendi, of {n}) | perplexity | empty | "
             "degenerate | time |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in results["stories"]:
        m = _story_means(p)
        lines.append(f"| {p['label']} | {m['similarity']:.3f} | {m['distinct_ideas']:.2f} | {m['ppl']:.1f} | {m['empty']} | "
                     f"{m['degenerate']} | {p['seconds']:.0f} s |")
    return "\n".join(lines)


def _chat_means(p: dict) -> dict:
    per = p["prompts"]
    return {"distinct": _mean([q["distinct"] for q in per]), "first_words": _mean([q["first_words"] for q in per]),
            "degenerate": sum(q["degenerate"] for q in per)}


def chat_table(results: dict) -> str:
    n = results["n"]
    lines = [f"| method | distinct answers (of {n}) | distinct first words | degenerate | time |", "| --- | --- | --- | --- | --- |"]
    for p in results["chat"]:
        m = _chat_means(p)
        lines.append(f"| {p['label']} | {m['distinct']:.1f} | {m['first_words']:.0%} | {m['degenerate']} | {p['seconds']:.0f} s |")
    return "\n".join(lines)


def math_table(results: dict) -> str:
    n = results["n"]
    lines = [f"| method | solved (pass@{n}) | correct attempts | distinct answers | mean pairwise similarity | time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for p in results["math"]:
        per = p["problems"]
        solved = sum(q["correct"] > 0 for q in per)
        lines.append(f"| {p['label']} | {solved}/{len(per)} | {sum(q['correct'] for q in per) / (n * len(per)):.0%} | "
                     f"{_mean([q['distinct'] for q in per]):.1f} | {_mean([q['similarity'] for q in per]):.3f} | {p['seconds']:.0f} s |")
    return "\n".join(lines)


def verdict(results: dict) -> list[str]:
    """What the numbers say, in words, including where explore did not help."""
    plain, tilted = results["stories"]
    sims = [(a["similarity"], b["similarity"]) for a, b in zip(plain["openings"], tilted["openings"])]
    more = sum(b < a for a, b in sims if not (math.isnan(a) or math.isnan(b)))
    mp, mt = _story_means(plain), _story_means(tilted)
    direction = "more" if mt["similarity"] < mp["similarity"] else "less"
    lines = [f"Stories: with {tilted['label']} the continuations were {direction} diverse on average (similarity "
             f"{mp['similarity']:.3f} -> {mt['similarity']:.3f}, distinct ideas {mp['distinct_ideas']:.2f} -> {mt['distinct_ideas']:.2f} "
             f"of {results['n']}), more diverse on {more} of {len(sims)} openings, at perplexity {mp['ppl']:.1f} -> {mt['ppl']:.1f}."]
    plain_chat, tilted_chat = (_chat_means(p) for p in results["chat"])
    lines.append(f"Chat: with {results['chat'][1]['label']} the answers held {tilted_chat['distinct']:.1f} distinct answers of "
                 f"{results['n']} per request against {plain_chat['distinct']:.1f} plain (first words {plain_chat['first_words']:.0%} -> "
                 f"{tilted_chat['first_words']:.0%} distinct), with {tilted_chat['degenerate']} degenerate "
                 f"answer{'' if tilted_chat['degenerate'] == 1 else 's'} against "
                 f"{plain_chat['degenerate']}.")
    solved = [sum(q["correct"] > 0 for q in p["problems"]) for p in results["math"]]
    count = len(results["math"][0]["problems"])
    if solved[1] == solved[0]:
        compared = "as many problems as"
    else:
        compared = f"{'more' if solved[1] > solved[0] else 'fewer'} problems than"
    lines.append(f"Word problems: {results['math'][1]['label']} solved {compared} plain sampling ({solved[1]} vs "
                 f"{solved[0]} of {count}). On so few problems a difference of one or two is noise."
                 + (" On 80 SVAMP problems at T 0.8 with top-p 0.95, ESamp solved 27.5% at least once in 8 against"
                    " 10.0% (docs/results/svamp_paper.md); at T = 1 with min-p 0.1 and older defaults, 100 problems"
                    " showed no gain (docs/results/quality_svamp.md)."
                    if results["model"] == EMBEDDED else ""))
    return lines


def _cell(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return (text or "(empty)").replace("|", "\\|")


def _plot(out: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain, tilted = results["stories"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for a, b in zip(plain["openings"], tilted["openings"]):
        ax.plot([a["ppl"], b["ppl"]], [a["similarity"], b["similarity"]], color="0.8", lw=1, zorder=1)
    for p, color in ((plain, "tab:blue"), (tilted, "tab:orange")):
        xs, ys = [o["ppl"] for o in p["openings"]], [o["similarity"] for o in p["openings"]]
        ax.scatter(xs, ys, color=color, alpha=0.6, s=25, zorder=2, label=f"{p['label']} (one opening)")
        m = _story_means(p)
        ax.scatter([m["ppl"]], [m["similarity"]], color=color, marker="*", s=220, edgecolor="black", zorder=3, label=f"{p['label']} (mean)")
    save_diversity_plot(fig, ax, out / "diversity.png", f"Story continuations, n={results['n']}: diversity vs perplexity",
                        "perplexity under the model (untilted)", legend_size=7)


def _side_by_side(prompts: list[str], plain: dict, tilted: dict, key: str, caption) -> list[str]:
    """One table per prompt: its samples of the plain pass beside the tilted pass's."""
    lines = []
    for i, (prompt, a, b) in enumerate(zip(prompts, plain[key], tilted[key]), 1):
        lines += [f"### {i}. {_cell(prompt)}", "", f"| # | {plain['label']} ({caption(a)}) | {tilted['label']} ({caption(b)}) |",
                  "| --- | --- | --- |"]
        lines += [f"| {k} | {_cell(x)} | {_cell(y)} |" for k, (x, y) in enumerate(zip(a["texts"], b["texts"]), 1)]
        lines.append("")
    return lines


def write_report(out: Path, results: dict) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _plot(out, results)
    said = verdict(results)
    plain, tilted = results["stories"]
    lines = [
        "# ESamp demo: plain sampling beside explore", "",
        f"Model: {results['model']} (server: {results['server']}); {platform.machine()}, {results['seconds']:.0f} s in all.", "",
        "## What it shows", "", *[f"- {s}" for s in said], "",
        f"## Stories: {len(results['openings'])} held-out openings, {results['n']} continuations of {results['story_tokens']} tokens, "
        "temperature 1", "", story_table(results), "",
        "Similarity: all-MiniLM-L6-v2 cosine between the continuations of one opening. Distinct ideas: the Vendi score of the "
        "same embeddings, the effective number of different continuations. Perplexity: under the model, untilted.", "",
        "![diversity against perplexity](diversity.png)", "",
        f"## Chat: {len(results['chat_prompts'])} held-out short-answer requests, {results['n']} answers of at most "
        f"{results['chat_tokens']} tokens, temperature 1", "", chat_table(results), "",
        "Distinct answers: the parts of a partition of the answers' embeddings in which two answers at cosine above 0.7 "
        "count as one. Distinct first words: the share of different first words. Degenerate: token soup or loops.", "",
        f"## Word problems: best-of-{results['n']} at temperature {results['math_temperature']:g}", "", math_table(results), "",
        "## The continuations, side by side", "",
    ]
    lines += _side_by_side(results["openings"], plain, tilted, "openings", lambda o: f"similarity {o['similarity']:.3f}")
    plain_chat, tilted_chat = results["chat"]
    lines += ["## The chat answers, side by side", ""]
    lines += _side_by_side(results["chat_prompts"], plain_chat, tilted_chat, "prompts", lambda o: f"{o['distinct']} distinct")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return Report(path, said)
