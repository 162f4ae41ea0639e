#!/usr/bin/env bash
# Tuning runs for the tail cap and stratified codes (tune splits; resumable: rerun to continue).
set -euo pipefail
cd "$(dirname "$0")"
for floor in 0.05 0 0.15; do
  case $floor in
    0.05) methods=vanilla,stratified,esamp,esamp_iid ;;
    *) methods=esamp,esamp_iid ;;
  esac
  sglang-esamp eval --task creative --split tune --limit 24 --n 8 --max-new-tokens 96 --concurrency 8 \
    --methods $methods --explore 0.5 --server-args "--esamp-tail-floor $floor" --out creative_floor$floor
  sglang-esamp eval --task chat --split tune --limit 24 --n 10 --max-new-tokens 64 --concurrency 8 \
    --methods $methods --explore 0.5 --server-args "--esamp-tail-floor $floor" --out chat_floor$floor
done
