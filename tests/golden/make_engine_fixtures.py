#!/usr/bin/env python3
"""PyTorch (CPU) golden fixtures for the engine kernels (conv, conv-transpose,
batch-norm, optimizers, losses, matmul).

How to run (from the crate root; needs torch, safetensors, numpy):

    pip install torch safetensors numpy
    python3 tests/golden/make_engine_fixtures.py

It (re)writes tests/golden/fixtures/{conv2d,conv_transpose2d,batchnorm,adam,
losses,matmul}.safetensors, which tests/golden_torch.rs reads. See
tests/golden/README.md for the tensor naming scheme and metadata format.

Precision policy
----------------
* Every INPUT (x, w, b, dy, gamma, grads, optimizer state, ...) is drawn as
  float32 and stored as float32.
* Every REFERENCE OUTPUT is computed in float64 from exactly those float32
  values (upcast losslessly) and then rounded to float32 once when stored.
  So the stored outputs are the correctly-rounded-ish results for the stored
  inputs; any difference the Rust side sees is its own f32 round-off.
* For the optimizers, steps 1-2 run in float64; the resulting state is then
  rounded to float32 (that rounded state is what is stored as *_before) and
  step 3 runs in float64 from the rounded state, so *_after is consistent
  with the stored *_before to float64 accuracy.
* As a diagnostic, the script also recomputes each output with PyTorch in
  float32 and prints the max abs / relative deviation from the stored
  reference, which is a guide for the tolerances the Rust tests need.

Everything is deterministic: torch.manual_seed(0), a fixed order of draws,
torch.use_deterministic_algorithms(True), single-threaded CPU.
"""

import json
import os
import struct

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "fixtures")
F64 = torch.float64
F32 = torch.float32

MAX_FILE = 100 * 1024
MAX_TOTAL = 600 * 1024

# Diagnostics: (file, tensor name) -> (max abs diff, max rel diff) of a float32
# PyTorch recomputation against the stored (float64-then-rounded) reference.
F32_DEVIATION = []


def randn(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=F32) * scale).contiguous()


def rand(*shape, lo=0.0, hi=1.0):
    return (torch.rand(*shape, dtype=F32) * (hi - lo) + lo).contiguous()


def f32(t):
    return t.detach().to(F32).contiguous()


def leaf64(t32):
    return t32.detach().to(F64).clone().requires_grad_(True)


def note_dev(fname, name, ref32, f32_result):
    d = (ref32.double() - f32_result.detach().double()).abs()
    scale = ref32.double().abs().max().clamp_min(1e-30)
    F32_DEVIATION.append((fname, name, float(d.max()), float(d.max() / scale)))


def meta(cases, extra=None):
    md = {"cases": str(len(cases)), "torch_version": torch.__version__,
          "compute_dtype": "float64, outputs rounded to float32"}
    for k, c in enumerate(cases):
        md[f"c{k}"] = json.dumps(c, sort_keys=True)
    if extra:
        md.update({k: str(v) for k, v in extra.items()})
    return md


# --------------------------------------------------------------------------
# 1. conv2d
# --------------------------------------------------------------------------
def make_conv2d():
    fname = "conv2d.safetensors"
    specs = [  # N, Ci, H, W, Co, K, stride, pad
        (2, 3, 9, 9, 4, 3, 1, 1),
        (3, 2, 11, 11, 5, 4, 2, 1),
        (2, 8, 14, 14, 16, 4, 2, 1),  # DCGAN discriminator-like
        (1, 1, 7, 7, 1, 1, 1, 0),
        (2, 3, 10, 8, 2, 5, 3, 2),
        (2, 4, 5, 5, 3, 3, 2, 0),
    ]
    tensors, cases = {}, []
    for k, (n, ci, h, w, co, ks, s, p) in enumerate(specs):
        fan_in = ci * ks * ks
        x = randn(n, ci, h, w)
        wt = randn(co, ci, ks, ks, scale=fan_in ** -0.5)
        b = randn(co, scale=0.5)
        xd, wd, bd = leaf64(x), leaf64(wt), leaf64(b)
        y = F.conv2d(xd, wd, bd, stride=s, padding=p)
        dy = randn(*y.shape)
        (y * dy.double()).sum().backward()
        pre = f"c{k}."
        tensors.update({pre + "x": x, pre + "w": wt, pre + "b": b, pre + "y": f32(y),
                        pre + "dy": dy, pre + "dx": f32(xd.grad), pre + "dw": f32(wd.grad),
                        pre + "db": f32(bd.grad)})
        cases.append({"stride": s, "padding": p, "dilation": 1, "groups": 1,
                      "N": n, "Ci": ci, "H": h, "W": w, "Co": co, "KH": ks, "KW": ks,
                      "OH": y.shape[2], "OW": y.shape[3]})
        # float32 diagnostic
        x3, w3, b3 = (t.clone().requires_grad_(True) for t in (x, wt, b))
        y3 = F.conv2d(x3, w3, b3, stride=s, padding=p)
        (y3 * dy).sum().backward()
        for nm, t3 in (("y", y3), ("dx", x3.grad), ("dw", w3.grad), ("db", b3.grad)):
            note_dev(fname, pre + nm, tensors[pre + nm], t3)
    return fname, tensors, meta(cases)


# --------------------------------------------------------------------------
# 2. conv_transpose2d
# --------------------------------------------------------------------------
def make_conv_transpose2d():
    fname = "conv_transpose2d.safetensors"
    specs = [  # N, Ci, H, W, Co, K, stride, pad, output_padding
        (2, 8, 7, 7, 4, 4, 2, 1, 0),  # DCGAN generator-like
        (2, 4, 14, 14, 1, 4, 2, 1, 0),
        (3, 3, 5, 5, 2, 3, 1, 1, 0),
        (2, 2, 4, 6, 3, 3, 2, 1, 1),
        (1, 5, 3, 3, 2, 5, 3, 2, 0),
        (2, 3, 6, 6, 2, 2, 2, 0, 0),
    ]
    tensors, cases = {}, []
    for k, (n, ci, h, w, co, ks, s, p, op) in enumerate(specs):
        fan_in = ci * ks * ks
        x = randn(n, ci, h, w)
        wt = randn(ci, co, ks, ks, scale=fan_in ** -0.5)  # PyTorch layout [Ci, Co, KH, KW]
        b = randn(co, scale=0.5)
        xd, wd, bd = leaf64(x), leaf64(wt), leaf64(b)
        y = F.conv_transpose2d(xd, wd, bd, stride=s, padding=p, output_padding=op)
        dy = randn(*y.shape)
        (y * dy.double()).sum().backward()
        pre = f"c{k}."
        tensors.update({pre + "x": x, pre + "w": wt, pre + "b": b, pre + "y": f32(y),
                        pre + "dy": dy, pre + "dx": f32(xd.grad), pre + "dw": f32(wd.grad),
                        pre + "db": f32(bd.grad)})
        cases.append({"stride": s, "padding": p, "output_padding": op, "dilation": 1,
                      "groups": 1, "N": n, "Ci": ci, "H": h, "W": w, "Co": co,
                      "KH": ks, "KW": ks, "OH": y.shape[2], "OW": y.shape[3]})
        x3, w3, b3 = (t.clone().requires_grad_(True) for t in (x, wt, b))
        y3 = F.conv_transpose2d(x3, w3, b3, stride=s, padding=p, output_padding=op)
        (y3 * dy).sum().backward()
        for nm, t3 in (("y", y3), ("dx", x3.grad), ("dw", w3.grad), ("db", b3.grad)):
            note_dev(fname, pre + nm, tensors[pre + nm], t3)
    return fname, tensors, meta(cases)


# --------------------------------------------------------------------------
# 3. batchnorm
# --------------------------------------------------------------------------
def make_batchnorm():
    fname = "batchnorm.safetensors"
    momentum, eps = 0.1, 1e-5
    specs = [  # (train, shape)
        (True, (4, 3, 5, 5)),
        (True, (2, 6, 7, 7)),
        (True, (8, 5)),
        (False, (3, 4, 3, 3)),
    ]
    tensors, cases = {}, []
    for k, (train, shape) in enumerate(specs):
        c = shape[1]
        x = randn(*shape, scale=1.5) + rand(1, c, *([1] * (len(shape) - 2)), lo=-1.0, hi=1.0)
        x = x.contiguous()
        gamma = rand(c, lo=0.5, hi=1.5)
        beta = randn(c, scale=0.5)
        rm = randn(c, scale=0.5)
        rv = rand(c, lo=0.5, hi=2.0)  # positive
        dy = randn(*shape)

        def run(dtype):
            bn_cls = torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d
            bn = bn_cls(c, eps=eps, momentum=momentum, affine=True,
                        track_running_stats=True).to(dtype)
            with torch.no_grad():
                bn.weight.copy_(gamma.to(dtype))
                bn.bias.copy_(beta.to(dtype))
                bn.running_mean.copy_(rm.to(dtype))
                bn.running_var.copy_(rv.to(dtype))
            bn.train(train)
            xx = x.to(dtype).clone().requires_grad_(True)
            y = bn(xx)
            (y * dy.to(dtype)).sum().backward()
            return (y, xx.grad, bn.weight.grad, bn.bias.grad,
                    bn.running_mean.detach().clone(), bn.running_var.detach().clone())

        y, dx, dg, db, rm_a, rv_a = run(F64)
        pre = f"c{k}."
        tensors.update({pre + "x": x, pre + "gamma": gamma, pre + "beta": beta,
                        pre + "running_mean": rm, pre + "running_var": rv,
                        pre + "running_mean_after": f32(rm_a),
                        pre + "running_var_after": f32(rv_a),
                        pre + "y": f32(y), pre + "dy": dy, pre + "dx": f32(dx),
                        pre + "dgamma": f32(dg), pre + "dbeta": f32(db)})
        cases.append({"train": train, "momentum": momentum, "eps": eps,
                      "shape": list(shape), "dims": len(shape),
                      "running_var_update": "unbiased (n/(n-1)) batch variance",
                      "normalize_var": "biased batch variance"})
        r3 = run(F32)
        for nm, t3 in zip(("y", "dx", "dgamma", "dbeta", "running_mean_after",
                           "running_var_after"), r3):
            note_dev(fname, pre + nm, tensors[pre + nm], t3)
    return fname, tensors, meta(cases)


# --------------------------------------------------------------------------
# 4. optimizers
# --------------------------------------------------------------------------
def make_adam():
    fname = "adam.safetensors"
    numel = 37
    specs = [
        ("adam", dict(lr=2e-3, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.0)),
        ("adam", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
        ("adamw", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)),
        ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
    ]
    tensors, cases = {}, []
    for k, (kind, hp) in enumerate(specs):
        p0 = randn(numel)
        grads = [randn(numel, scale=0.5) for _ in range(3)]

        def make_opt(param, dtype_unused=None):
            if kind == "adam":
                return torch.optim.Adam([param], foreach=False, amsgrad=False, **hp)
            if kind == "adamw":
                return torch.optim.AdamW([param], foreach=False, amsgrad=False, **hp)
            return torch.optim.SGD([param], foreach=False, dampening=0.0, nesterov=False, **hp)

        def state_tensors(opt, param):
            st = opt.state[param]
            if kind == "sgd":
                return st["momentum_buffer"], torch.zeros_like(param)
            return st["exp_avg"], st["exp_avg_sq"]

        def run(dtype):
            param = torch.nn.Parameter(p0.to(dtype).clone())
            opt = make_opt(param)
            for g in grads[:2]:
                param.grad = g.to(dtype).clone()
                opt.step()
            # Round the state to float32 (this is what gets stored as *_before)
            # and continue from the rounded state.
            with torch.no_grad():
                param.copy_(param.to(F32).to(dtype))
                for key, val in opt.state[param].items():
                    if torch.is_tensor(val) and val.is_floating_point() and key != "step":
                        val.copy_(val.to(F32).to(dtype))
            m_b, v_b = (f32(t) for t in state_tensors(opt, param))
            p_b = f32(param)
            param.grad = grads[2].to(dtype).clone()
            opt.step()
            m_a, v_a = (f32(t) for t in state_tensors(opt, param))
            step = opt.state[param].get("step", None)
            return p_b, m_b, v_b, f32(param), m_a, v_a, step

        p_b, m_b, v_b, p_a, m_a, v_a, step = run(F64)
        if step is not None:
            assert int(step) == 3, step
        pre = f"c{k}."
        tensors.update({pre + "param_before": p_b, pre + "grad": grads[2],
                        pre + "m_before": m_b, pre + "v_before": v_b,
                        pre + "param_after": p_a, pre + "m_after": m_a, pre + "v_after": v_a})
        if kind == "sgd":
            c = {"kind": "sgd", "lr": hp["lr"], "beta1": hp["momentum"], "beta2": 0.0,
                 "eps": 0.0, "weight_decay": hp["weight_decay"], "step": 3,
                 "momentum": hp["momentum"], "dampening": 0.0, "nesterov": False,
                 "note": "buf = momentum*buf + (g + wd*p); p -= lr*buf; v unused (zeros)"}
        else:
            c = {"kind": kind, "lr": hp["lr"], "beta1": hp["betas"][0],
                 "beta2": hp["betas"][1], "eps": hp["eps"],
                 "weight_decay": hp["weight_decay"], "step": 3, "amsgrad": False,
                 "note": ("L2: g += wd*p before moments" if kind == "adam"
                          else "decoupled: p *= 1 - lr*wd before the Adam update")}
        cases.append(c)
        r3 = run(F32)
        for nm, t3 in (("param_after", r3[3]), ("m_after", r3[4]), ("v_after", r3[5])):
            note_dev(fname, pre + nm, tensors[pre + nm], t3)
    return fname, tensors, meta(cases)


# --------------------------------------------------------------------------
# 5. losses
# --------------------------------------------------------------------------
def make_losses():
    fname = "losses.safetensors"
    tensors, cases = {}, []

    def grads_of(loss_fn, inputs32, dtype):
        leaves = [t.to(dtype).clone().requires_grad_(True) for t in inputs32]
        loss = loss_fn(*leaves)
        loss.backward()  # upstream gradient 1
        return loss.reshape(1), [l.grad for l in leaves]

    # c0: BCE with logits, mean
    x = randn(64, 1, scale=2.0)
    t = (torch.rand(64, 1) < 0.5).to(F32)
    fn = lambda xx: F.binary_cross_entropy_with_logits(xx, t.to(xx.dtype), reduction="mean")
    loss, (dx,) = grads_of(fn, [x], F64)
    tensors.update({"c0.x": x, "c0.t": t, "c0.loss": f32(loss), "c0.dx": f32(dx)})
    cases.append({"loss": "bce_with_logits", "reduction": "mean", "shape": [64, 1]})
    l3, (d3,) = grads_of(fn, [x], F32)
    note_dev(fname, "c0.loss", tensors["c0.loss"], l3)
    note_dev(fname, "c0.dx", tensors["c0.dx"], d3)

    # c1: MSE, mean
    x = randn(5, 7)
    t = randn(5, 7)
    fn = lambda xx: F.mse_loss(xx, t.to(xx.dtype), reduction="mean")
    loss, (dx,) = grads_of(fn, [x], F64)
    tensors.update({"c1.x": x, "c1.t": t, "c1.loss": f32(loss), "c1.dx": f32(dx)})
    cases.append({"loss": "mse", "reduction": "mean", "shape": [5, 7]})
    l3, (d3,) = grads_of(fn, [x], F32)
    note_dev(fname, "c1.loss", tensors["c1.loss"], l3)
    note_dev(fname, "c1.dx", tensors["c1.dx"], d3)

    # c2: cross-entropy, mean, integer labels stored as float
    x = randn(9, 10, scale=2.0)
    labels = torch.randint(0, 10, (9,))
    fn = lambda xx: F.cross_entropy(xx, labels, reduction="mean")
    loss, (dx,) = grads_of(fn, [x], F64)
    tensors.update({"c2.x": x, "c2.labels": labels.to(F32), "c2.loss": f32(loss),
                    "c2.dx": f32(dx)})
    cases.append({"loss": "cross_entropy", "reduction": "mean", "shape": [9, 10],
                  "labels": "float32 class indices, shape [9]"})
    l3, (d3,) = grads_of(fn, [x], F32)
    note_dev(fname, "c2.loss", tensors["c2.loss"], l3)
    note_dev(fname, "c2.dx", tensors["c2.dx"], d3)

    # c3: Gaussian KL, mean over batch of sum over dims
    mu = randn(6, 8)
    logvar = randn(6, 8, scale=0.7)

    def kl(m, lv):
        return (-0.5 * (1 + lv - m.pow(2) - lv.exp())).sum(dim=1).mean()

    loss, (dmu, dlv) = grads_of(kl, [mu, logvar], F64)
    tensors.update({"c3.mu": mu, "c3.logvar": logvar, "c3.loss": f32(loss),
                    "c3.dmu": f32(dmu), "c3.dlogvar": f32(dlv)})
    cases.append({"loss": "gaussian_kl", "reduction": "sum over dim 1, mean over batch",
                  "shape": [6, 8],
                  "formula": "mean_b sum_d -0.5*(1 + lv - mu^2 - exp(lv))"})
    l3, (dm3, dl3) = grads_of(kl, [mu, logvar], F32)
    note_dev(fname, "c3.loss", tensors["c3.loss"], l3)
    note_dev(fname, "c3.dmu", tensors["c3.dmu"], dm3)
    note_dev(fname, "c3.dlogvar", tensors["c3.dlogvar"], dl3)
    return fname, tensors, meta(cases)


# --------------------------------------------------------------------------
# 6. matmul
# --------------------------------------------------------------------------
def make_matmul():
    fname = "matmul.safetensors"
    specs = [((17, 65), (65, 3)), ((1, 1), (1, 1)), ((3, 5, 7), (3, 7, 4))]
    tensors, cases = {}, []
    for k, (sa, sb) in enumerate(specs):
        a = randn(*sa)
        b = randn(*sb)
        ad, bd = leaf64(a), leaf64(b)
        c = torch.matmul(ad, bd)
        dc = randn(*c.shape)
        (c * dc.double()).sum().backward()
        pre = f"c{k}."
        tensors.update({pre + "a": a, pre + "b": b, pre + "c": f32(c), pre + "dc": dc,
                        pre + "da": f32(ad.grad), pre + "db": f32(bd.grad)})
        cases.append({"a_shape": list(sa), "b_shape": list(sb), "c_shape": list(c.shape),
                      "batched": len(sa) == 3})
        a3, b3 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        c3 = torch.matmul(a3, b3)
        (c3 * dc).sum().backward()
        for nm, t3 in (("c", c3), ("da", a3.grad), ("db", b3.grad)):
            note_dev(fname, pre + nm, tensors[pre + nm], t3)
    return fname, tensors, meta(cases)


# --------------------------------------------------------------------------
def canonicalize_header(path):
    """safetensors serializes __metadata__ from a hash map, so its key order
    (and hence the file bytes) changes from run to run. Rewrite the JSON header
    with sorted keys (same length, same offsets) so regeneration is
    byte-for-byte reproducible. The tensor data is untouched."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= n, (path, len(text), n)
    text = text + b" " * (n - len(text))  # safetensors pads the header with spaces
    with open(path, "wb") as f:
        f.write(raw[:8] + text + raw[8 + n:])
    os.chmod(path, 0o644)  # safetensors creates files 0600


def main():
    print(f"torch {torch.__version__}")
    os.makedirs(OUT_DIR, exist_ok=True)
    written = []
    for maker in (make_conv2d, make_conv_transpose2d, make_batchnorm, make_adam,
                  make_losses, make_matmul):
        fname, tensors, md = maker()
        for name, t in tensors.items():
            assert t.dtype == F32 and t.is_contiguous(), name
            assert torch.isfinite(t).all(), name
        path = os.path.join(OUT_DIR, fname)
        save_file(tensors, path, metadata=md)
        canonicalize_header(path)
        written.append((fname, path, tensors, md))

    # Verify: reload, compare bit-exactly, check sizes.
    total = 0
    print("\nfile                            bytes  tensors  cases")
    for fname, path, tensors, md in written:
        back = load_file(path)
        assert set(back) == set(tensors), fname
        for name, t in tensors.items():
            assert back[name].dtype == F32 and torch.equal(back[name], t), (fname, name)
        size = os.path.getsize(path)
        total += size
        assert size < MAX_FILE, (fname, size)
        print(f"{fname:30s} {size:6d}  {len(tensors):7d}  {md['cases']:>5s}")
    assert total < MAX_TOTAL, total
    print(f"{'total':30s} {total:6d}")

    print("\nper-case metadata:")
    for fname, _, _, md in written:
        for k in range(int(md["cases"])):
            print(f"  {fname} c{k}: {md[f'c{k}']}")

    print("\ntensor shapes:")
    for fname, _, tensors, _ in written:
        print(f"  {fname}")
        for name in sorted(tensors, key=lambda s: (int(s.split('.')[0][1:]), s)):
            print(f"    {name:24s} {list(tensors[name].shape)}")

    print("\nPyTorch float32 recomputation vs stored float64-derived reference "
          "(guide for Rust tolerances):")
    worst = {}
    for fname, name, ab, rel in F32_DEVIATION:
        if fname not in worst or rel > worst[fname][1]:
            worst[fname] = (ab, rel, name)
    for fname, (ab, rel, name) in worst.items():
        print(f"  {fname:30s} worst {name:22s} abs {ab:.3e}  rel-to-max {rel:.3e}")

if __name__ == "__main__":
    main()
