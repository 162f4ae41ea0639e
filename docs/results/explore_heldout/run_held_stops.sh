#!/usr/bin/env bash
# Held out: the plausible form leaving the stop ids out of the tilt (how `hold` is kept there
# since these runs: no pass over the vocabulary), at explore 1, on the whole test splits.
# Against chat65_hold/ and creative64_hold/ (the same cap computed over the whole row) and
# vanilla T = 1 (chat65_g5's, ../quality_creative_heldout_sgd's). Resumable: rerun to continue.
# About 12 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
sglang-esamp eval --task chat --split test --limit 65 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods esamp --explore 1 --out chat65_held_stops
sglang-esamp eval --task creative --split test --limit 64 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp --explore 1 --out creative64_held_stops
