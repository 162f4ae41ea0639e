#!/usr/bin/env bash
# SVAMP at the paper's word-problem setting (T 0.8, top-p 0.95), the 80 test problems of
# ../svamp_paper, n = 8, ESamp at explore 0.5 with group centering (--esamp-tilt-center group,
# the default since this run); vanilla and the uncentered ESamp are ../svamp_paper's.
# Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")"
sglang-esamp eval --task svamp --split test --limit 80 --n 8 --temperature 0.8 --top-p 0.95 \
  --methods esamp --explore 0.5 --concurrency 8 --server-args "--esamp-tilt-center group" --out .
sglang-esamp eval-compare "$PWD:esamp@0.5" "$PWD/../svamp_paper:esamp@0.5"
sglang-esamp eval-compare "$PWD:esamp@0.5" "$PWD/../svamp_paper:vanilla"
