#!/usr/bin/env python3
"""Writes the malformed-input corpus of tests/malformed.rs and the seeds of the fuzz
targets (src/fuzz.rs). Standard library only. Run from anywhere:
    python3 tests/corpus/make_corpus.py
Each kind/ directory holds inputs; expected.tsv maps each malformed one to a substring of
the one-line error the command line must print (files named valid* are fuzz seeds)."""
import gzip, json, os, shutil, struct, zlib

ROOT = os.path.dirname(os.path.abspath(__file__))
EXPECTED = []


def put(kind, name, data, expect=None):
    d = os.path.join(ROOT, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    if expect is not None:
        EXPECTED.append((f"{kind}/{name}", expect))


def idx_images(n, h, w, fill=7):
    return struct.pack(">IIII", 0x803, n, h, w) + bytes([fill]) * (n * h * w)


# IDX images (train --data idx:FILE)
put("idx", "valid.idx", idx_images(3, 28, 28))
put("idx", "bad_magic.idx", struct.pack(">IIII", 0x1234, 3, 28, 28) + bytes(3 * 784), "wrong magic number")
put("idx", "labels_as_images.idx", struct.pack(">II", 0x801, 3) + bytes(3), "looks like a label file")
put("idx", "truncated_header.idx", struct.pack(">II", 0x803, 3), "truncated")
put("idx", "truncated_payload.idx", idx_images(3, 28, 28)[:-100], "truncated: header claims 3 images")
put("idx", "trailing.idx", idx_images(3, 28, 28) + b"extra", "trailing data")
put("idx", "empty.idx", b"", "empty file")
put("idx", "zero_images.idx", struct.pack(">IIII", 0x803, 0, 28, 28), "which is empty")
put("idx", "huge_claim.idx", struct.pack(">IIII", 0x803, 0xFFFFFFFF, 0xFFFF, 0xFFFF) + bytes(100), "header claims 4294967295 images")
put("idx", "too_few.idx", idx_images(3, 28, 28), "is larger than the 2 training images")

# gzip-compressed IDX
valid_gz = gzip.compress(idx_images(3, 28, 28), mtime=0)
put("gzip", "valid.idx.gz", valid_gz)
put("gzip", "truncated.idx.gz", valid_gz[: len(valid_gz) // 2], "truncated gzip stream")
put("gzip", "corrupt.idx.gz", valid_gz[:10] + bytes(len(valid_gz) - 10), "corrupt gzip data")
put("gzip", "gzip_of_garbage.idx.gz", gzip.compress(b"not an idx file at all", mtime=0), "wrong magic number")


def npy(descr, shape, payload, fortran=False, version=1):
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if fortran else "False", "(" + "".join(f"{d}, " for d in shape).rstrip(" ") + ")")
    pre = 10 if version == 1 else 12
    header += " " * ((64 - (pre + len(header) + 1) % 64) % 64) + "\n"
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode() + payload


def f4(values):
    return struct.pack(f"<{len(values)}f", *values)


# .npy latents (sample --latents FILE) for a generator with z_dim 8
put("npy", "valid.npy", npy("<f4", (4, 8), f4([0.5] * 32)))
put("npy", "valid_f8.npy", npy("<f8", (2, 8), struct.pack("<16d", *([0.25] * 16))))
put("npy", "bad_magic.npy", b"NOTNPY" + bytes(100), "bad magic")
put("npy", "fortran.npy", npy("<f4", (4, 8), f4([0.5] * 32), fortran=True), "Fortran-order")
put("npy", "int_dtype.npy", npy("<i4", (4, 8), bytes(128)), "unsupported dtype")
put("npy", "big_endian.npy", npy(">f4", (4, 8), bytes(128)), "unsupported dtype")
put("npy", "truncated.npy", npy("<f4", (4, 8), f4([0.5] * 20)), "truncated")
put("npy", "header_cut.npy", npy("<f4", (4, 8), b"")[:30], "truncated")
put("npy", "bad_version.npy", b"\x93NUMPY\x09\x00" + bytes(100), "format version 9")
put("npy", "header_not_text.npy", b"\x93NUMPY\x01\x00\x04\x00\xff\xfe\xfd\xfc", "not text")
put("npy", "no_shape.npy", npy("<f4", (4, 8), f4([0.5] * 32)).replace(b"'shape'", b"'shap_'"), "no 'shape'")
put("npy", "nan.npy", npy("<f4", (4, 8), f4([float("nan")] * 32)), "latents must be finite")
put("npy", "wrong_width.npy", npy("<f4", (4, 7), f4([0.5] * 28)), "7")
put("npy", "empty_rows.npy", npy("<f4", (0, 8), b""), "no latents")


def safetensors(tensors, metadata=None, header_pad=b""):
    header, data, off = {}, b"", 0
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(payload)]}
        data += payload
        off += len(payload)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, sort_keys=True).encode() + header_pad
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


# safetensors: the fuzz target's schema (src/fuzz.rs: conv 2x1x3x3 + bias, batch norm bn1),
# and broken files that replace a run's generator.safetensors (sample --checkpoint RUN)
valid_st = safetensors([
    ("conv.weight", "F32", (2, 1, 3, 3), f4([0.1] * 18)),
    ("conv.bias", "F32", (2,), f4([0.0, 0.0])),
    ("bn1.weight", "F32", (2,), f4([1.0, 1.0])),
    ("bn1.running_mean", "F32", (2,), f4([0.0, 0.0])),
    ("bn1.num_batches_tracked", "I64", (), struct.pack("<q", 3)),
], metadata={"format": "pt"})
put("safetensors", "valid.safetensors", valid_st)
put("safetensors", "other_model.safetensors", valid_st, "is missing")
put("safetensors", "garbage.safetensors", b"this is not a safetensors file at all", "not a valid safetensors file")
put("safetensors", "truncated.safetensors", valid_st[:-20], "not a valid safetensors file")
put("safetensors", "header_len_huge.safetensors", struct.pack("<Q", 1 << 60) + b"{}", "not a valid safetensors file")
put("safetensors", "bad_json.safetensors", struct.pack("<Q", 8) + b"{notjson", "not a valid safetensors file")
put("safetensors", "empty.safetensors", b"", "not a valid safetensors file")

# state.json (train --resume on a run whose state.json is replaced)
state = {"step": 10, "rng_seed": 0, "rng_offset": 0, "elapsed_s": 1.0,
         "sampler": {"seed": 0, "n": 100, "epoch": 0, "pos": 20}}
put("state", "valid.json", json.dumps(state))
put("state", "not_json.json", "{step: 10", "not a valid run state")
put("state", "empty.json", "", "not a valid run state")
put("state", "missing_sampler.json", json.dumps({k: v for k, v in state.items() if k != "sampler"}), "missing field `sampler`")
put("state", "wrong_type.json", json.dumps({**state, "step": "ten"}), "not a valid run state")
put("state", "other_data.json", json.dumps(state), "data order is over 100 images")
put("state", "negative.json", json.dumps({**state, "step": -1}), "not a valid run state")

# TOML configs (train --config FILE)
put("config", "valid.toml", "steps = 2\nbatch = 4\n[gan]\ng_width = 8\nd_width = 8\n")
put("config", "unknown_key.toml", "stepz = 5\n", "unknown setting 'stepz' (did you mean 'steps'?)")
put("config", "unknown_section.toml", "[ganz]\nz_dim = 3\n", "unknown setting 'ganz' (did you mean 'gan'?)")
put("config", "unknown_nested.toml", "[gan]\nz_dimm = 4\n", "did you mean 'gan.z_dim'")
put("config", "bad_type.toml", 'steps = "ten"\n', "steps: invalid type")
put("config", "negative.toml", "steps = -1\n", "steps: invalid value")
put("config", "bad_enum.toml", '[gan]\nloss = "hing"\n', "gan.loss: unknown variant `hing`")
put("config", "beta2.toml", "beta2 = 5.0\n", "beta2 must be in [0, 1)")
put("config", "huge_width.toml", "[gan]\ng_width = 4611686018427387904\n", "between 1 and 1024")
put("config", "section_as_value.toml", "gan = 3\n", "gan is a section")
put("config", "value_as_section.toml", "[steps]\nx = 1\n", "steps is a value")
put("config", "not_toml.toml", "steps = [\n", "not valid TOML")
put("config", "zero_batch.toml", "batch = 0\n", "batch")
put("config", "nan_lr.toml", "lr_g = nan\n", "lr_g")
put("config", "bad_resolution.toml", "[gan]\nresolution = 30\n", "30")

# Image folders (train --data folder:DIR): a directory per case
def folder(name, files, expect):
    d = os.path.join(ROOT, "folder", name)
    os.makedirs(d, exist_ok=True)
    for fname, data in files.items():
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)
    EXPECTED.append((f"folder/{name}", expect))


def png(w, h, rows):
    raw = b"".join(b"\x00" + r for r in rows)
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


good = png(28, 28, [bytes([i * 9 % 256] * 28) for i in range(28)])
shutil.rmtree(os.path.join(ROOT, "folder"), ignore_errors=True)
folder("corrupt_png", {"a.png": good, "b.png": b"\x89PNG\r\n\x1a\ngarbage"}, "b.png")
folder("truncated_png", {"a.png": good, "c.png": good[: len(good) // 2]}, "c.png")
folder("garbage_jpeg", {"a.png": good, "d.jpg": b"\xff\xd8\xff\xe0 not really a jpeg"}, "d.jpg")
folder("no_images", {"readme.txt": b"no images here"}, "no PNG/JPEG images found")
folder("zero_size_png", {"e.png": png(1, 1, [b"\x00"])[:0] + b""}, "e.png")

with open(os.path.join(ROOT, "expected.tsv"), "w") as f:
    f.write("# input\tsubstring of its one-line error (written by make_corpus.py)\n")
    for k, v in EXPECTED:
        f.write(f"{k}\t{v}\n")
print(f"{len(EXPECTED)} malformed inputs, {sum(1 for k in os.listdir(ROOT))} entries in {ROOT}")
