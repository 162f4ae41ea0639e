#!/usr/bin/env bash
# Held out: the stop cap that holds the end-of-sequence probability (--esamp-stop-cap hold,
# the default since these runs) at explore 1, on the whole test splits. Vanilla T = 1:
# chat65_g5's and ../quality_creative_heldout_sgd's; the defaults before it: chat65_g5/ and
# creative_center_g5/. Resumable: rerun to continue. About 12 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
sglang-esamp eval --task chat --split test --limit 65 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods esamp --explore 1 --server-args "--esamp-stop-cap hold" --out chat65_hold
sglang-esamp eval --task creative --split test --limit 64 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp --explore 1 --server-args "--esamp-stop-cap hold" --out creative64_hold
