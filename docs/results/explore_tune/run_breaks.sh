#!/usr/bin/env bash
# Tuning splits, explore 1: the defaults (the stop ids left out of the plausible set under
# `hold`) and the word-break rule on top (--esamp-word-breaks hold: the plausible tokens that
# end a word and the others each keep their untilted total). Chat: all 65 prompts, against
# chat65/'s vanilla T = 1; stories: the first 64 openings, with their own vanilla T = 1.
# --esamp-word-breaks exists at commit 99804ce only (measured, then removed); run this script there.
# Resumable: rerun to continue. About 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
CHAT="--task chat --split tune --limit 65 --n 10 --max-new-tokens 64 --concurrency 8"
CREATIVE="--task creative --split tune --limit 64 --n 8 --max-new-tokens 96 --concurrency 8"
sglang-esamp eval $CHAT --methods esamp --explore 1 --out chat65_held
sglang-esamp eval $CHAT --methods esamp --explore 1 --server-args "--esamp-word-breaks hold" --out chat65_breaks
sglang-esamp eval $CREATIVE --methods vanilla,esamp --explore 1 --out creative64_held
sglang-esamp eval $CREATIVE --methods esamp --explore 1 --server-args "--esamp-word-breaks hold" --out creative64_breaks
