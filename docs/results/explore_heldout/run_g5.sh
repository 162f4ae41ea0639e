#!/usr/bin/env bash
# The whole held-out splits with --esamp-tilt-max-gain 5 at explore 1: chat's 65 prompts
# (vanilla T = 1 in the same run) and the stories' 64 openings (vanilla T = 1 is
# ../quality_creative_heldout_sgd's, on the same 64). Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")"
G5="--esamp-tilt-max-gain 5"
sglang-esamp eval --task chat --split test --limit 65 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods vanilla,esamp --explore 1 --server-args "$G5" --out chat65_g5
sglang-esamp eval --task creative --split test --limit 64 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp --explore 1 --server-args "$G5" --out creative_center_g5
# The same splits at explore 0.5 with the defaults (the bound is the default since these runs);
# vanilla T = 1: chat65_g5's and ../quality_creative_heldout_sgd's.
sglang-esamp eval --task chat --split test --limit 65 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods esamp --explore 0.5 --out chat65_g5_05
sglang-esamp eval --task creative --split test --limit 64 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp --explore 0.5 --out creative64_g5_05
