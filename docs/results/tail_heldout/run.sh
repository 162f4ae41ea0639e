#!/usr/bin/env bash
# Held-out diversity of --esamp-distiller tail against the default mlp, explore 0.5, on the
# same prompts as ../explore_heldout (whose vanilla rows are the T = 1 reference).
# Resumable: gunzip each folder's samples.jsonl.gz, then rerun to continue. Compare with
# sglang-esamp eval-compare (see ../tail_study.md). Creative's T = 1 reference is the
# vanilla row of ../quality_creative_heldout_sgd (the same first 24 prompts).
set -euo pipefail
cd "$(dirname "$0")"
for kind in mlp tail; do
  sglang-esamp eval --task creative --split test --limit 24 --n 8 --max-new-tokens 96 --concurrency 8 \
    --methods esamp --explore 0.5 --out "creative_$kind" --server-args "--esamp-distiller $kind"
  sglang-esamp eval --task chat --split test --limit 24 --n 10 --max-new-tokens 64 --concurrency 8 \
    --methods esamp --explore 0.5 --out "chat_$kind" --server-args "--esamp-distiller $kind"
done
# SVAMP at the paper's setting (../svamp_paper: the same 80 problems, whose vanilla and mlp
# rows are the references), ESamp with the tail
sglang-esamp eval --task svamp --split test --limit 80 --n 8 --temperature 0.8 --top-p 0.95 \
  --methods esamp --explore 0.5 --concurrency 8 --out svamp_tail --server-args "--esamp-distiller tail"
