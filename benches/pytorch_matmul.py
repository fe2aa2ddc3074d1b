#!/usr/bin/env python3
"""PyTorch matmul timings: the reference point for `activegen bench matmul` on a GPU.

Times C = A @ B for square float32 matrices (sizes as for activegen: 256 512 1024 2048 by
default) on the chosen device and prints one JSON line per size: the median of `--reps`
products after warm-up, timed by CUDA events on the GPU (GPU time, as activegen's
timestamp queries measure) and by the wall clock on the CPU. TF32 is off
unless --tf32 is given, since activegen computes in plain float32.

  python3 benches/pytorch_matmul.py --device cuda
  python3 benches/pytorch_matmul.py --device cuda --tf32 --sizes 1024,4096
"""
import argparse
import json
import statistics
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="256,512,1024,2048")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--tf32", action="store_true")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for n in [int(s) for s in args.sizes.split(",")]:
        a = torch.randn(n, n, device=args.device)
        b = torch.randn(n, n, device=args.device)
        for _ in range(3):
            a @ b
        sync()
        times = []
        for _ in range(args.reps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                a @ b
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1e3
        print(json.dumps({
            "framework": "pytorch", "op": "matmul", "shape": f"{n}x{n}x{n}", "tf32": args.tf32,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "ms": round(ms, 4), "gflops": round(2 * n**3 / ms / 1e6, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
