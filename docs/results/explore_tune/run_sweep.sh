#!/usr/bin/env bash
# Tuning splits, the two settings docs/results/explore_quality.md left untested, each against
# the defaults (explore 0.5): --esamp-shared-prefix-tilt off (a sample is not tilted while it
# shares its generated tokens with another of its group) and a higher plausibility floor
# (--esamp-tail-floor 0.15). Same prompts, n and lengths as run.sh; vanilla (T = 1) is
# run.sh's, in the "keep" folders. Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")"
CHAT="--task chat --split tune --limit 24 --n 10 --max-new-tokens 64 --concurrency 8"
CREATIVE="--task creative --split tune --limit 24 --n 8 --max-new-tokens 96 --concurrency 8"
sglang-esamp eval $CHAT --methods esamp --explore 0.5 --server-args "--esamp-shared-prefix-tilt off" --out chat_prefix_off
sglang-esamp eval $CREATIVE --methods esamp --explore 0.5 --server-args "--esamp-shared-prefix-tilt off" --out creative_prefix_off
sglang-esamp eval $CHAT --methods esamp --explore 0.5 --server-args "--esamp-tail-floor 0.15" --out chat_floor15
sglang-esamp eval $CREATIVE --methods esamp --explore 0.5 --server-args "--esamp-tail-floor 0.15" --out creative_floor15
for run in chat_free chat_prefix_off chat_floor15; do
  sglang-esamp eval-compare "$run:esamp@0.5" chat_keep:vanilla
done
for run in creative_free creative_prefix_off creative_floor15; do
  sglang-esamp eval-compare "$run:esamp@0.5" creative_keep:vanilla
done
