#!/usr/bin/env bash
# Randomised kill -9 test: N times, start a run, kill it with SIGKILL at a random moment,
# resume it, and compare with an uninterrupted run of the same settings.
#   train:  a small GAN, 300 steps, a checkpoint every step (so many kills land inside a
#           checkpoint write); compares every weight and optimizer file byte for byte.
#   active: coverage-gap, 3 rounds; compares rounds.jsonl (without wall-clock seconds) and
#           the acquired set.
# Every resume must end identical or be refused with a one-line error; the tally is printed.
# Usage: scripts/kill_test.sh [N=24]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-24}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
cargo build --release --quiet
A=$PWD/target/release/activegen
W=$(mktemp -d)
export ACTIVEGEN_CACHE=$W/cache
trap 'rm -rf "$W"' EXIT
TRAIN="train --steps 300 --checkpoint-every 1 --batch 8 --g-width 8 --d-width 8 --quiet"
ACTIVE="active --strategy coverage-gap --initial 40 --budget 40 --per-round 20 --steps-per-round 20 \
 --eval-steps 20 --eval-n 20 --g-width 8 --d-width 8 --z-dim 8 --batch 8 --ssl-steps 3 --pool-subsample 300 --quiet"
$A $TRAIN --out "$W/train-straight" 2>/dev/null
$A $ACTIVE --out "$W/active-straight" >/dev/null 2>&1
strip() { sed -E 's/"seconds":[0-9.eE+-]+//' "$1/rounds.jsonl"; cat "$1/rounds/round_02.json" | tr -d ' \n' | sed -E 's/"seconds":[0-9.eE+-]+//'; }
same=0; refused=0; different=0; early=0; inside=0
for i in $(seq 1 "$N"); do
  kind=$([ $((i % 3)) -eq 0 ] && echo active || echo train)
  out=$W/$kind-$i
  if [ "$kind" = train ]; then cmd=$TRAIN; else cmd=$ACTIVE; fi
  delay=$(python3 -c "import random; print(round(random.uniform(0.8, 4.0), 3))")
  $A $cmd --out "$out" >/dev/null 2>&1 & pid=$!
  sleep "$delay"
  if kill -9 $pid 2>/dev/null; then
    wait $pid 2>/dev/null || true
    staged=$(find "$out" -name '*.staged' -o -name '*.tmp*' | wc -l)
    [ "$staged" -gt 0 ] && inside=$((inside + 1))
    at="killed after ${delay}s ($staged staged/temporary files)"
  else
    wait $pid 2>/dev/null || true
    early=$((early + 1)); at="finished before the kill at ${delay}s"
  fi
  if ! err=$($A $cmd --out "$out" --resume 2>&1 >/dev/null); then
    refused=$((refused + 1)); echo "$i $kind: $at: resume refused: $(echo "$err" | tail -1)"; continue
  fi
  if [ "$kind" = train ]; then
    ok=1; for f in generator discriminator generator_ema optimizer; do
      cmp -s "$W/train-straight/$f.safetensors" "$out/$f.safetensors" || ok=0; done
  else
    ok=1; [ "$(strip "$W/active-straight")" = "$(strip "$out")" ] || ok=0
  fi
  if [ $ok = 1 ]; then same=$((same + 1)); echo "$i $kind: $at: resumed identical"
  else different=$((different + 1)); echo "$i $kind: $at: resumed DIFFERENT"; fi
done
echo "kill test: $N trials ($inside killed inside a checkpoint write, $early finished before the kill): $same identical, $refused refused, $different different"
[ "$different" -eq 0 ]
