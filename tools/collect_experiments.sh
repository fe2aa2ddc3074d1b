#!/usr/bin/env bash
# Copies the small result files of each experiment cell (tables, per-round results, charts)
# from a runs directory into experiments/, which is committed; checkpoints and sample grids
# stay in runs/. Usage: tools/collect_experiments.sh [RUNS=runs/experiments] [DEST=experiments]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/experiments}"
dest="${2:-experiments}"
for cell in "$runs"/*/*/; do
    [ -f "$cell/results.json" ] || continue
    rel="${cell#"$runs"/}"
    mkdir -p "$dest/$rel"
    cp "$cell"/results.csv "$cell"/results.json "$cell"/summary.txt "$cell"/*.svg "$dest/$rel"
    echo "$dest/$rel"
done
