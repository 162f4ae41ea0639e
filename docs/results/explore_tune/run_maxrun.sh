#!/usr/bin/env bash
# Tuning splits: the tilt left off inside a long word (--esamp-tilt-max-run 12) on top of the
# defaults of its time (centering, --esamp-tilt-max-gain 5), explore 1. Compared against
# chat_center_g5/ and creative_center_g5/ (same prompts, same settings without it).
# --esamp-tilt-max-run exists at commit 648ecc1 only (measured, then removed); run this script there.
# Resumable: rerun to continue. About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
CHAT="--task chat --split tune --limit 24 --n 10 --max-new-tokens 64 --concurrency 8"
CREATIVE="--task creative --split tune --limit 24 --n 8 --max-new-tokens 96 --concurrency 8"
R12="--esamp-tilt-center group --esamp-tilt-max-gain 5 --esamp-tilt-max-run 12"
sglang-esamp eval $CHAT --methods esamp --explore 1 --server-args "$R12" --out chat_maxrun12
sglang-esamp eval $CREATIVE --methods esamp --explore 1 --server-args "$R12" --out creative_maxrun12
