#!/usr/bin/env bash
# Word problems at the exploration issue's size: SVAMP's test split, 100 problems, n = 16,
# T 0.8 with top-p 0.95 for every method; vanilla, stratified codes alone, and ESamp at
# explore 0.5 (the value measured at this setting) with the defaults (stratified codes on).
# Problems run in chunks of 8 with every method, so a partial folder is paired.
# Resumable: rerun to continue. Many CPU hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
# the committed samples are gzipped; the harness resumes from the plain file
[ -f samples.jsonl.gz ] && [ ! -f samples.jsonl ] && gunzip samples.jsonl.gz
# the stop cap the run started with (the default then; the default is now 'hold')
sglang-esamp eval --task svamp --split test --limit 100 --n 16 --temperature 0.8 --top-p 0.95 \
  --methods vanilla,stratified,esamp --explore 0.5 --concurrency 8 --server-args "--esamp-stop-cap probability" --out .
