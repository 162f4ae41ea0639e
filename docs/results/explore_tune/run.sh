#!/usr/bin/env bash
# Tuning splits: the plausible form's tilt as it comes (free, the default) against the same
# tilt rescaled to each row's untilted entropy (--esamp-tilt-entropy keep). Resumable: rerun
# to continue. Vanilla (T = 1) runs once per task, in the "keep" folder (plain sampling does
# not touch ESamp); compare across folders with sglang-esamp eval-compare.
set -euo pipefail
cd "$(dirname "$0")"
CHAT="--task chat --split tune --limit 24 --n 10 --max-new-tokens 64 --concurrency 8"
sglang-esamp eval $CHAT --methods vanilla,esamp --explore 0.5,1 --server-args "--esamp-tilt-entropy keep" --out chat_keep
sglang-esamp eval $CHAT --methods esamp --explore 0.5,1 --out chat_free
CREATIVE="--task creative --split tune --limit 24 --n 8 --max-new-tokens 96 --concurrency 8"
sglang-esamp eval $CREATIVE --methods vanilla,esamp --explore 0.5 --server-args "--esamp-tilt-entropy keep" --out creative_keep
sglang-esamp eval $CREATIVE --methods esamp --explore 0.5 --out creative_free
sglang-esamp eval $CREATIVE --methods esamp --explore 1,2 --out creative_free_b
for pair in chat_free:esamp@0.5 chat_free:esamp@1 chat_keep:esamp@0.5 chat_keep:esamp@1; do
  sglang-esamp eval-compare "$pair" chat_keep:vanilla
done
for pair in creative_free:esamp@0.5 creative_free_b:esamp@1 creative_free_b:esamp@2 creative_keep:esamp@0.5; do
  sglang-esamp eval-compare "$pair" creative_keep:vanilla
done
