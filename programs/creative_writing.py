"""Creative writing: n continuations of each story opening, forked from one state (raw
text, no chat template). Shows how far apart they are: mean pairwise cosine similarity of
sentence embeddings (lower is more diverse) and the Vendi score (effective number of
distinct continuations), both over the non-empty continuations, and how many came out
empty; plain and with explore.

    python programs/creative_writing.py --limit 4 --n 8
"""

import argparse

import numpy as np

from sglang_esamp.evaluation.diversity import embed, mean_pairwise_cosine, vendi
from sglang_esamp.evaluation.metrics import nan_mean
from sglang_esamp.evaluation.tasks import load_task
from sglang_esamp.lang.backend import add_program_args, program_cases, run_passes
from sglang_esamp.lang.recipes import continue_story


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="test", choices=("tune", "test", "all"))
    parser.add_argument("--limit", type=int, default=4, help="number of story openings")
    parser.add_argument("--show", type=int, default=3, help="continuations printed per opening")
    add_program_args(parser, n=8, max_new_tokens=96, explore=1.0)
    args = parser.parse_args()
    program_cases(args)  # flag errors before any server starts
    openings = load_task("creative", args.split, args.limit)
    summary = []
    for label, states, seconds in run_passes(continue_story, [dict(opening=o.question, samples=args.n) for o in openings], args):
        sims, vendis, empty = [], [], 0
        for o, st in zip(openings, states):
            texts = [t.strip() for t in st["continuations"] if t.strip()]
            empty += args.n - len(texts)
            emb = embed(texts) if texts else np.zeros((0, 384))
            sims.append(mean_pairwise_cosine(emb))
            vendis.append(vendi(emb))
            print(f"\n  {o.question[:90]}...  (similarity {sims[-1]:.3f}, Vendi {vendis[-1]:.2f}, empty {args.n - len(texts)})")
            for t in texts[: args.show]:
                print(f"    - {t[:140]!r}")
        summary.append((label, nan_mean(sims), nan_mean(vendis), empty / (args.n * len(openings)), seconds))
    print(f"\n| pass | mean pairwise similarity | Vendi (of {args.n}) | empty | time |\n| --- | --- | --- | --- | --- |")
    for label, sim, v, empty, elapsed in summary:
        print(f"| {label} | {sim:.3f} | {v:.2f} | {empty:.0%} | {elapsed:.0f} s |")


if __name__ == "__main__":
    main()
