"""Per-kind breakdown of a chat eval folder (docs/results/quality_chat_tune.md): similarity,
perplexity, natural stops, tokens, distinct first words and distiller error per method and
kind of prompt. Run: ``python docs/results/chat_tune/by_kind.py DIR``."""

import collections
import json
import math
import sys

import numpy as np

from sglang_esamp.evaluation.diversity import embed, mean_pairwise_cosine

KINDS = ["name", "pick", "poem", "recommend", "many"]  # the chat task's kinds take turns in its file


def main(folder: str) -> None:
    agg = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    for line in open(f"{folder}/samples.jsonl"):
        rec = json.loads(line)
        kind = KINDS[int(rec["problem"].split("/")[1]) % len(KINDS)]
        texts = [s["text"].strip() for s in rec["samples"]]
        first = [t.split()[0].strip('".,!*').lower() if t.split() else "" for t in texts]
        nll = [s["nll"] for s in rec["samples"] if s["nll"] is not None]
        rel = [s["esamp"]["rel_err"] for s in rec["samples"] if (s.get("esamp") or {}).get("rel_err") is not None]
        for key in (kind, "all"):
            a = agg[rec["method"]][key]
            a["sim"].append(mean_pairwise_cosine(embed([t for t in texts if t] or [""])))
            a["ppl"].append(math.exp(np.mean(nll)))
            a["stop"].append(np.mean([s["finish"] == "stop" for s in rec["samples"]]))
            a["tok"].append(np.mean([s["tokens"] for s in rec["samples"]]))
            a["first"].append(len(set(first)) / len(first))
            a["rel"] += [np.mean(rel)] if rel else []
    print("| method | kind | similarity | ppl | natural stop | tokens | distinct first words | rel err |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, kinds in agg.items():
        for key in ["all", *KINDS]:
            a = kinds[key]
            rel = f"{np.mean(a['rel']):.2f}" if a["rel"] else "-"
            print(f"| {method} | {key} | {np.mean(a['sim']):.3f} | {np.mean(a['ppl']):.1f} | {100 * np.mean(a['stop']):.0f}% | "
                  f"{np.mean(a['tok']):.1f} | {np.mean(a['first']):.2f} | {rel} |")


if __name__ == "__main__":
    main(sys.argv[1])
