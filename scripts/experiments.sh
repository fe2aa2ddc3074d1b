#!/usr/bin/env bash
# The experiments of EXPERIMENTS.md: label-free active acquisition against random under the
# retrain protocol, three seeds per cell. Every run is resumable: rerunning this script
# continues where it stopped, and each budget point two arms share is trained once.
# Usage: scripts/experiments.sh [CELL ...] [--out DIR]
#   CELL: fashion-mnist/long-tail (the goal cell), builtin/long-tail, fashion-mnist/balanced,
#         or all (the default, in that order).
# ARMS=a,b,... and SEEDS=N narrow a cell (EXPERIMENTS.md says which cells ran narrowed).
set -euo pipefail
cd "$(dirname "$0")/.."
out="runs/experiments"
cells=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        all) cells+=(fashion-mnist/long-tail builtin/long-tail fashion-mnist/balanced); shift ;;
        *) cells+=("$1"); shift ;;
    esac
done
[ ${#cells[@]} -gt 0 ] || cells=(fashion-mnist/long-tail builtin/long-tail fashion-mnist/balanced)
bin="${ACTIVEGEN_BIN:-target/release/activegen}"
[ -n "${ACTIVEGEN_BIN:-}" ] || cargo build --release --quiet
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# The measured model: the DCGAN at 24 channels, batch 32, Adam at 5e-4, generator EMA 0.999, trained
# from scratch for 1500 steps at every evaluated budget (the retrain protocol). On the full
# balanced Fashion-MNIST pool that net reaches class coverage 1.0 (EXPERIMENTS.md). The
# acquisition model is the same net, warm-started, 200 steps per round. The grid is sized
# for a two-core machine in about an hour per cell: three evaluated budget points.
common=(--model gan --g-width 24 --d-width 24 --batch 32 --lr 5e-4 --ema-decay 0.999
        --initial 100 --budget 400 --per-round 100 --steps-per-round 200
        --eval-budgets 0,200,400 --eval-steps 1500 --eval-n 1000 --seeds "${SEEDS:-3}" --quiet)
arms="${ARMS:-random,random+diffaug,coverage-gap,coverage-stratified,coreset,gan-disc,synthesis}"

for cell in "${cells[@]}"; do
    data="${cell%%/*}"
    scenario="${cell##*/}"
    extra=()
    # Fashion-MNIST's pool has 60k images: each round scores a random 10k of it.
    [ "$data" = fashion-mnist ] && extra=(--pool-subsample 10000)
    echo "== $data / $scenario: $arms"
    "$bin" compare --data "$data" --scenario "$scenario" --strategies "$arms" \
        "${common[@]}" "${extra[@]}" --out "$out/$data/$scenario"
done
