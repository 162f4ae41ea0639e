#!/usr/bin/env bash
# Held-out runs of the defaults (--esamp-tail-floor 0.05, stratified codes for n > 1) on the
# test splits. Resumable: rerun to continue.
# Creative: vanilla and matched@0.5 of the same prompts are in ../quality_creative_heldout_sgd
# (plain sampling does not touch the distiller), compared with sglang-esamp eval-compare.
set -euo pipefail
cd "$(dirname "$0")"
sglang-esamp eval --task chat --split test --limit 24 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods vanilla,esamp,stratified,matched --explore 0.5 --out chat
sglang-esamp eval --task creative --split test --limit 24 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods esamp,stratified,esamp_iid --explore 0.5 --out creative
# FIRE (a high temperature at the first token only) on the same prompts, against the same vanilla
sglang-esamp eval --task chat --split test --limit 24 --n 10 --max-new-tokens 64 --concurrency 8 \
  --methods fire --out chat_fire
sglang-esamp eval --task creative --split test --limit 24 --n 8 --max-new-tokens 96 --concurrency 8 \
  --methods fire --out creative_fire
