#!/usr/bin/env bash
# The experiments of EXPERIMENTS.md: active acquisition against random on two datasets and
# three pools, three seeds each. Every run is resumable: rerunning this script continues
# where it stopped. Usage: scripts/experiments.sh [builtin|fashion-mnist|all] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
out="${2:-runs/experiments}"
bin="${ACTIVEGEN_BIN:-target/release/activegen}"
[ -n "${ACTIVEGEN_BIN:-}" ] || cargo build --release --quiet

common=(--model gan --initial 100 --budget 500 --per-round 100 --steps-per-round 200
        --eval-n 1000 --seeds 3 --quiet)

run() { # dataset scenario strategies [extra flags]
    local data="$1" scenario="$2" strategies="$3"
    shift 3
    echo "== $data / $scenario: $strategies $*"
    "$bin" compare --data "$data" --scenario "$scenario" --strategies "$strategies" \
        "${common[@]}" "$@" --out "$out/$data/$scenario"
}

for data in builtin fashion-mnist; do
    [ "$which" = all ] || [ "$which" = "$data" ] || continue
    strategies=random,hybrid,coverage-gap,coverage-hybrid,coverage-stratified
    extra=()
    if [ "$data" = fashion-mnist ]; then
        # hybrid trailed random in every builtin pool; Fashion-MNIST's pool has 60k images
        # (240k when redundant), so score a random 10k of it per round.
        strategies=random,coverage-gap,coverage-hybrid,coverage-stratified
        extra=(--pool-subsample 10000)
    fi
    for scenario in balanced long-tail redundant; do
        run "$data" "$scenario" "$strategies" "${extra[@]}"
    done
done
