#!/usr/bin/env bash
# Held-out runs with group centering (--esamp-tilt-center group, the default since these runs)
# at explore 0.5 and 1, on the prompts of run.sh; vanilla (T = 1) is chat/'s and, for stories,
# ../quality_creative_heldout_sgd's (plain sampling does not touch the distiller).
# Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")"
sglang-esamp eval --task chat --split test --limit 24 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods esamp --explore 0.5,1 --out chat_center
sglang-esamp eval --task creative --split test --limit 24 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp --explore 0.5,1 --out creative_center
# Explore 1 with each token's gain bounded at 5 (the tuning lead).
G5="--esamp-tilt-max-gain 5"
sglang-esamp eval --task chat --split test --limit 24 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods esamp --explore 1 --server-args "$G5" --out chat_center_g5
sglang-esamp eval --task creative --split test --limit 24 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp --explore 1 --server-args "$G5" --out creative_center_g5
