#!/usr/bin/env bash
# Held out: the stop cap 'hold' with the tilt left off inside a long word
# (--esamp-tilt-max-run 12), at explore 1, on the whole test splits. The flag exists at
# commit 648ecc1 only (measured, then removed); run this script there.
set -euo pipefail
cd "$(dirname "$0")"
NEW="--esamp-stop-cap hold --esamp-tilt-max-run 12"
sglang-esamp eval --task chat --split test --limit 65 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods esamp --explore 1 --server-args "$NEW" --out chat65_hold_r12
sglang-esamp eval --task creative --split test --limit 64 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp --explore 1 --server-args "$NEW" --out creative64_hold_r12
