#!/usr/bin/env bash
# Chat tuning split, all 65 prompts, explore 1: the defaults of the time, the stop cap that
# holds the end-of-sequence probability (--esamp-stop-cap hold), and the tilt left off inside
# a long word (--esamp-tilt-max-run 12), each against vanilla T = 1 of the first run.
# --esamp-tilt-max-run exists at commit 648ecc1 only (measured, then removed); run this script there.
# Resumable: rerun to continue. About 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
CHAT="--task chat --split tune --limit 65 --n 10 --max-new-tokens 64 --concurrency 8"
sglang-esamp eval $CHAT --methods vanilla,esamp --explore 1 --server-args "--esamp-tilt-max-run 0" --out chat65
sglang-esamp eval $CHAT --methods esamp --explore 1 --server-args "--esamp-tilt-max-run 0 --esamp-stop-cap hold" --out chat65_hold
sglang-esamp eval $CHAT --methods esamp --explore 1 --server-args "--esamp-tilt-max-run 12" --out chat65_r12
