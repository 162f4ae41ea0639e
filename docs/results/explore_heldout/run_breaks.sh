#!/usr/bin/env bash
# Held out: the word-break rule (--esamp-word-breaks hold) on top of the defaults, at explore 1,
# on the whole test splits. Against chat65_held_stops/ and creative64_held_stops/ (the defaults,
# same code) and vanilla T = 1 (chat65_g5's, ../quality_creative_heldout_sgd's).
# --esamp-word-breaks exists at commit 99804ce only (measured, then removed); run this script there.
# Resumable: rerun to continue. About 17 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
sglang-esamp eval --task chat --split test --limit 65 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods esamp --explore 1 --server-args "--esamp-word-breaks hold" --out chat65_breaks
sglang-esamp eval --task creative --split test --limit 64 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp --explore 1 --server-args "--esamp-word-breaks hold" --out creative64_breaks
