#!/usr/bin/env python3
"""Recomputes activegen's metrics from the features it exported, with NumPy/SciPy alone.

    activegen eval --checkpoint runs/gan --json --export-features /tmp/feats > /tmp/eval.json
    python3 tests/golden/check_exported_features.py /tmp/feats /tmp/eval.json

real.npy and generated.npy are the (already scaled) feature matrices the metrics used.
FID, KID over the full sets' subsets, precision/recall (k=3) and density/coverage (k=5)
are written here from the papers' definitions (not from activegen's code) and compared
with the JSON: FID and the PRDC shares to 1e-3 relative. KID is compared with its
reported subset standard deviation, since its subsets are drawn by a different generator.
"""
import json
import sys

import numpy as np
from scipy import linalg


def fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def mmd2(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def kth(dist, k):
    return np.sort(dist, axis=1)[:, k]  # column 0 is the point itself


def prdc(real, fake, k_pr=3, k_dc=5):
    rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    rf = np.linalg.norm(real[:, None] - fake[None], axis=2)
    r_pr, f_pr, r_dc = kth(rr, k_pr), kth(ff, k_pr), kth(rr, k_dc)
    precision = float((rf <= r_pr[:, None]).any(axis=0).mean())
    recall = float((rf <= f_pr[None, :]).any(axis=1).mean())
    density = float((rf <= r_dc[:, None]).sum(axis=0).mean() / k_dc)
    coverage = float((rf.min(axis=1) <= r_dc).mean())
    return precision, recall, density, coverage


def main():
    feats, report = sys.argv[1], json.load(open(sys.argv[2]))
    real = np.load(f"{feats}/real.npy").astype(np.float64)
    fake = np.load(f"{feats}/generated.npy").astype(np.float64)
    ours = {"fid": fid(real, fake)}
    ours["precision"], ours["recall"], ours["density"], ours["coverage"] = prdc(real, fake)
    ok = True
    for key, want in ours.items():
        got = report[key]
        rel = abs(got - want) / max(abs(want), 1e-12)
        flag = "ok" if rel <= 1e-3 else "MISMATCH"
        ok &= rel <= 1e-3
        print(f"{key:<10} activegen {got:.6f}  numpy {want:.6f}  rel {rel:.2e}  {flag}")
    sub = min(1000, len(real), len(fake))
    kid = mmd2(real[:sub], fake[:sub])
    print(f"kid        activegen {report['kid']:.6f} ± {report['kid_std']:.6f}  numpy (first {sub}) {kid:.6f}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
