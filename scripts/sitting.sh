#!/bin/bash
# One interleaved sitting for #23's goals: activegen tuned, activegen --no-tune and PyTorch
# eager (2 threads) on the same cores, round after round, DCGAN then VAE. Prints each run and
# then the medians and ratios. Needs a release build and python3 with torch.
#   ROUNDS=4 bash scripts/sitting.sh | tee sitting.txt
set -eu
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
AG=${AG:-target/release/activegen}
log=$(mktemp)
for r in $(seq 1 "${ROUNDS:-4}"); do
  for m in gan vae; do
    t=$($AG bench step --model $m --steps 15 --json 2>/dev/null | tail -1)
    u=$($AG --no-tune bench step --model $m --steps 15 --json 2>/dev/null | tail -1)
    p=$(python3 benches/pytorch_step.py --model $m --steps 20 --threads 2 --no-flops 2>/dev/null | tail -1)
    echo "round $r $m | tuned $t | untuned $u | torch $p" | tee -a "$log"
  done
done
python3 - "$log" <<'PY'
import json, re, statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"round (\d+) (\w+) \| tuned (\{.*?\}) \| untuned (\{.*?\}) \| torch (\{.*\})", line)
    if m:
        t, u, p = (json.loads(m.group(i)) for i in (3, 4, 5))
        rows.setdefault(m.group(2), []).append((t["ms"], u["ms"], p["ms_per_step"]))
for model, runs in rows.items():
    tuned, untuned, torch = (st.median(r[i] for r in runs) for i in range(3))
    per_round = [round(r[0] / r[2], 2) for r in runs]
    print(f"{model}: tuned {tuned:.1f} ms, --no-tune {untuned:.1f} ms, PyTorch {torch:.1f} ms; "
          f"tuned / PyTorch {tuned / torch:.2f}x (rounds {min(per_round)}-{max(per_round)})")
PY
rm -f "$log"
