#!/usr/bin/env bash
# Tuning splits, the last two leads: the tilt without its sharpening at the plausible tokens
# (--esamp-tilt-entropy local), and a hot first token among the plausible tokens
# (first_token_probe.py). Each against vanilla T = 1 of its own run. Resumable: rerun to
# continue. About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
CHAT="--task chat --split tune --limit 24 --n 10 --max-new-tokens 64 --concurrency 8"
CREATIVE="--task creative --split tune --limit 24 --n 8 --max-new-tokens 96 --concurrency 8"
sglang-esamp eval $CHAT --methods vanilla,esamp --explore 0.5,1 --server-args "--esamp-tilt-entropy local" --out chat_local
sglang-esamp eval $CREATIVE --methods vanilla,esamp --explore 0.5,1 --server-args "--esamp-tilt-entropy local" --out creative_local
python first_token_probe.py chat_hotfirst
for m in stratified stratified+hotfirst esamp@0.5 esamp+hotfirst@0.5; do
  sglang-esamp eval-compare "chat_hotfirst:$m" chat_hotfirst:vanilla
done
for m in esamp@0.5 esamp@1; do
  sglang-esamp eval-compare "chat_local:$m" chat_local:vanilla
  sglang-esamp eval-compare "creative_local:$m" creative_local:vanilla
done
sglang-esamp eval-compare creative_local:esamp@0.5 creative_free:esamp@0.5
