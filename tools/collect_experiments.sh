#!/usr/bin/env bash
# Copies the small result files of each experiment cell (tables, per-round results, charts)
# and what each arm bought per round from a runs directory into experiments/retrain/, which is
# committed; checkpoints and sample grids stay in runs/. Usage: tools/collect_experiments.sh [RUNS=runs/experiments] [DEST=experiments/retrain]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/experiments}"
dest="${2:-experiments/retrain}"
for cell in "$runs"/*/*/; do
    [ -f "$cell/results.json" ] || continue
    rel="${cell#"$runs"/}"
    mkdir -p "$dest/$rel"
    cp "$cell"/results.csv "$cell"/results.json "$cell"/summary.txt "$cell"/*.svg "$dest/$rel"
    # What each arm bought per round (indices and class histograms): a few KB per round.
    for rounds in "$cell"/*/seed*/rounds; do
        arm_seed="${rounds#"$cell"}"
        mkdir -p "$dest/$rel/$arm_seed"
        cp "$rounds"/round_*.json "$dest/$rel/$arm_seed/"
    done
    echo "$dest/$rel"
done
