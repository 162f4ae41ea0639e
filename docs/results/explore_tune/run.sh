#!/usr/bin/env bash
# Tuning runs for the tail cap, stratified codes and the shared-prefix rule (tune splits).
# Resumable: rerun to continue. 16 prompts per task, so that a setting costs minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
run() {  # run NAME METHODS SERVER_ARGS
  sglang-esamp eval --task creative --split tune --limit 16 --n 8 --max-new-tokens 64 --concurrency 8 \
    --methods "$2" --explore 0.5 --server-args "$3" --out "creative_$1"
  sglang-esamp eval --task chat --split tune --limit 16 --n 10 --max-new-tokens 64 --concurrency 8 \
    --methods "$2" --explore 0.5 --server-args "$3" --out "chat_$1"
}
run floor0.05 vanilla,esamp_iid,esamp "--esamp-tail-floor 0.05"
run floor0.15 esamp "--esamp-tail-floor 0.15"
run floor0.05_unshared esamp "--esamp-tail-floor 0.05 --esamp-shared-prefix-tilt off"
