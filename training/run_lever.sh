#!/usr/bin/env bash
# One lever run, re-runnable on a quiet machine: train with the given flags into runs/levers/NAME, then model vs
# baseline on the built-in validation split and the casual_chat dev proxy (never the held-out file).
#   training/run_lever.sh NAME [pairbert train flags...]
set -euo pipefail
name=$1; shift
bin=${BIN:-.venv/bin}
out=runs/levers/$name
rm -rf "$out"
start=$(date +%s)
"$bin/pairbert" train --output-dir "$out" --quiet "$@" 2>&1 | grep -v Warning || true
end=$(date +%s)
echo "$name: training $((end - start)) s ($*)" | tee "$out/lever.txt"
"$bin/python" -m pairbert.training.quality_report "$out/best" --out "$out/quality.json" \
    --data training/data/validation.jsonl training/data/dev/casual_chat.jsonl | tee -a "$out/lever.txt"
