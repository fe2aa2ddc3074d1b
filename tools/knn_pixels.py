#!/usr/bin/env python3
"""Raw-pixel kNN accuracy (k = 20) of an IDX dataset, the baseline `activegen encoder`
prints beside its features; a numpy cross-check for large sets (Fashion-MNIST's 60,000 x
10,000 pixel products take the engine minutes on lavapipe). Pixels in [0, 1], as the
engine feeds them; ties in the vote go to the nearest neighbour's class, as in
`ssl::knn_accuracy`.

Usage: python3 tools/knn_pixels.py [DIR=/usr/share/datasets/fashion-mnist] [K=20]
"""
import gzip
import sys

import numpy as np

d = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
k = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


xtr = idx(f"{d}/train-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255
ytr = idx(f"{d}/train-labels-idx1-ubyte.gz", 8).astype(np.int64)
xte = idx(f"{d}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255
yte = idx(f"{d}/t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
for name, cos in [("Euclidean", False), ("cosine", True)]:
    a, b = xtr, xte
    if cos:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sq = (a * a).sum(1)
    correct = 0
    for s in range(0, len(b), 1000):
        dots = b[s:s + 1000] @ a.T
        score = dots if cos else 2 * dots - sq
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        for r in range(len(top)):
            nn = top[r][np.lexsort((top[r], -score[r, top[r]]))]
            votes = np.bincount(ytr[nn], minlength=10)
            best = votes.max()
            label = next(ytr[j] for j in nn if votes[ytr[j]] == best)
            correct += label == yte[s + r]
    print(f"raw pixels, {name}: {100 * correct / len(b):.2f}% ({len(xtr)} memory, {len(b)} test, k = {k})")
