#!/usr/bin/env bash
# SVAMP at the paper's word-problem setting (T 0.8, top-p 0.95) for every method, with the
# current defaults; 80 test problems, n = 8. Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")"
sglang-esamp eval --task svamp --split test --limit 80 --n 8 --temperature 0.8 --top-p 0.95 \
  --methods vanilla,stratified,esamp --explore 0.5 --concurrency 8 --out .
