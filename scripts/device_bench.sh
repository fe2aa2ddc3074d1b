#!/usr/bin/env bash
# The prepared benchmark for a lent NVIDIA GPU machine (issue #6, item 6): activegen's
# training step and kernel benchmarks over Vulkan, PyTorch's eager and torch.compile steps
# and fp32 matmul on the same GPU in the same run, then activegen's test suite on the GPU.
#
# That machine has PyTorch but no Rust toolchain and no Vulkan loader, so this machine
# prepares a bundle first (scripts/device_bench.sh --bundle): the release binary and the
# test executables, compressed, in .dev/, plus the Vulkan loader packages in .gl/ (the
# device README's recipe). The run then carries .dev and .gl:
#   run(command="bash scripts/device_bench.sh", carry=[".gl", ".dev"])
# Results land in $OUT: step.jsonl, pytorch.jsonl, kernels.jsonl, profile.txt, tests.log,
# run.log, tiles.txt, split.txt, poolsearch.jsonl. Arguments pick sections, run in this order (default: all
# but tiles and split):
# tiles split step pytorch compile tests profile kernels poolsearch. `tiles` times every tile form of the
# tiled GEMM (ACTIVEGEN_GEMM_TILE) on square products, the DCGAN's GEMM shapes and the step;
# `split` the weight gradients cut into 1 to 64 K slices (dev/gemm_shapes.rs split).
set -u
if [ "${1:-}" = "--bundle" ]; then
    set -e
    cargo build --release --examples
    bins=$(cargo test --release --no-run 2>&1 | grep -o 'target/release/deps/[^ )]*')
    mkdir -p .dev
    printf '%s\n' $bins >.dev/tests.txt
    pwd >.dev/checkout.txt # the path the test executables were built at
    tar cJf .dev/bundle.tar.xz target/release/activegen target/release/examples/gemm_shapes $bins
    ls -la .dev
    exit 0
fi

sections=${*:-step pytorch compile profile kernels poolsearch tests}
skip="--skip subgroup_" # the subgroup GEMM needs 8- or 16-wide subgroups (CPU drivers)
want() { [[ " $sections " == *" $1 "* ]]; }
OUT=${OUT:-/tmp/activegen-device}
mkdir -p "$OUT"
log="$OUT/run.log"
exec > >(tee -a "$log") 2>&1
stamp() { echo "== $(date +%T) $*"; }

stamp setup
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if ! ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null | grep -qi nvidia; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
tar xJf .dev/bundle.tar.xz
# The test executables carry the checkout path they were built at (fixtures, the CLI
# binary): make it lead here.
built_at=$(cat .dev/checkout.txt)
[ -e "$built_at" ] || { mkdir -p "$(dirname "$built_at")" && ln -s "$PWD" "$built_at"; }
export XDG_RUNTIME_DIR=/tmp
nvidia-smi -L
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
A=./target/release/activegen
$A devices || exit 1

if want tiles; then
stamp "tile forms"
for form in 64x4 128x8 auto; do
    if [ $form = auto ]; then unset ACTIVEGEN_GEMM_TILE; else export ACTIVEGEN_GEMM_TILE=$form; fi
    echo "--- tile $form" | tee -a "$OUT/tiles.txt"
    timeout 60 $A bench matmul --sizes 256,512,1024,2048,4096 | tee -a "$OUT/tiles.txt"
    for b in 64 256; do timeout 60 ./target/release/examples/gemm_shapes $b | tee -a "$OUT/tiles.txt"; done
    for b in 64 256; do timeout 60 $A bench step --model gan --batch $b --steps 30 | tee -a "$OUT/tiles.txt"; done
done
unset ACTIVEGEN_GEMM_TILE
fi

if want split; then
stamp "split-K sweep of the weight gradients"
for b in 64 256; do timeout 60 ./target/release/examples/gemm_shapes $b split | tee -a "$OUT/split.txt"; done
fi

if want step; then
stamp "activegen step (round 1)"
for model in gan vae; do
    for batch in 64 256; do
        timeout 120 $A bench step --model $model --batch $batch --steps 50 --json | tee -a "$OUT/step.jsonl"
    done
done

fi

if want pytorch; then
stamp "pytorch step: eager$(want compile && echo ' and torch.compile')"
timeout 100 python3 benches/pytorch_step.py --device cuda --batch 64 --steps 50 --warmup 10 \
    $(want compile && echo --compile) | tee -a "$OUT/pytorch.jsonl"
timeout 40 python3 benches/pytorch_step.py --device cuda --batch 256 --steps 50 --warmup 10 --no-flops \
    | tee -a "$OUT/pytorch.jsonl"
fi

if want step; then
stamp "activegen step (round 2, after PyTorch)"
for model in gan vae; do
    timeout 60 $A bench step --model $model --batch 64 --steps 50 --json | tee -a "$OUT/step.jsonl"
done
fi

if want tests; then
stamp "tests on the GPU"
for t in $(cat .dev/tests.txt); do
    echo "--- $t" >>"$OUT/tests.log"
    timeout 45 "$t" --test-threads 8 $skip >>"$OUT/tests.log" 2>&1
    rc=$?
    echo "exit $rc $t" | tee -a "$OUT/tests.log"
    if [ $rc = 124 ]; then
        # A hang: one test at a time, so the log's last unfinished line names it.
        echo "--- $t (one thread)" >>"$OUT/tests.log"
        timeout 25 "$t" --test-threads 1 $skip >>"$OUT/tests.log" 2>&1
        echo "exit $? $t (one thread)" | tee -a "$OUT/tests.log"
    fi
done
grep -E "^test result|FAILED|panicked" "$OUT/tests.log" | head -60
fi

if want profile; then
stamp "profile"
for model in gan vae; do
    for batch in 64 256; do
        timeout 60 $A bench step --model $model --batch $batch --steps 20 --profile | tee -a "$OUT/profile.txt"
    done
done
timeout 60 ./target/release/examples/gemm_shapes 256 | tee -a "$OUT/profile.txt"
fi

if want kernels; then
stamp "kernels"
timeout 90 $A bench all --json --sizes 256,512,1024,2048,4096 | tee -a "$OUT/kernels.jsonl"
timeout 60 python3 benches/pytorch_matmul.py --device cuda --sizes 256,512,1024,2048,4096 | tee -a "$OUT/kernels.jsonl"
timeout 60 python3 benches/pytorch_matmul.py --device cuda --sizes 1024,4096 --tf32 | tee -a "$OUT/kernels.jsonl"
fi

if want poolsearch; then
stamp "pool search"
# 10^4..10^6 pool rows against 1,000 generated; the CPU loop only up to 10^5 (it is the
# same host loop as on lavapipe's machine, not the GPU's).
timeout 240 $A bench pool-search --json --cpu-max-rows 100000 | tee -a "$OUT/poolsearch.jsonl"
fi

stamp done
