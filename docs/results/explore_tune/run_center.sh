#!/usr/bin/env bash
# Tuning splits: group centering (--esamp-tilt-center group), alone and with the bound on any
# token's gain (--esamp-tilt-max-gain 3). Each against vanilla T = 1 of its own run.
# Resumable: rerun to continue. About 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
CHAT="--task chat --split tune --limit 24 --n 10 --max-new-tokens 64 --concurrency 8"
CREATIVE="--task creative --split tune --limit 24 --n 8 --max-new-tokens 96 --concurrency 8"
sglang-esamp eval $CHAT --methods vanilla,esamp --explore 0.5,1 --server-args "--esamp-tilt-center group" --out chat_center
sglang-esamp eval $CREATIVE --methods vanilla,esamp --explore 0.5,1 --server-args "--esamp-tilt-center group" --out creative_center
G3="--esamp-tilt-center group --esamp-tilt-max-gain 3"
sglang-esamp eval $CREATIVE --methods vanilla,esamp --explore 1,2 --server-args "$G3" --out creative_center_g3
sglang-esamp eval $CHAT --methods vanilla,esamp --explore 1,2 --server-args "$G3" --out chat_center_g3
G5="--esamp-tilt-center group --esamp-tilt-max-gain 5"
sglang-esamp eval $CREATIVE --methods vanilla,esamp --explore 1 --server-args "$G5" --out creative_center_g5
sglang-esamp eval $CHAT --methods vanilla,esamp --explore 1 --server-args "$G5" --out chat_center_g5
