#!/usr/bin/env python3
"""PyTorch (CPU) reference timings for activegen's training steps.

Purpose
-------
activegen trains a DCGAN and a small conv VAE on its own GPU engine.
BENCHMARKS.md compares activegen's time per training step against PyTorch on
CPU, measured in the same session on the same machine.  This script is the
PyTorch side of that comparison.  It builds the *same* architectures as
activegen (module attribute names match, so ``state_dict()`` keys line up with
activegen's checkpoints), runs the same optimiser step sequence, and times one
full training step at a time.

What is timed
-------------
* GAN step (both nets in train mode, Adam(lr=2e-4, betas=(0.5, 0.999)) each):
    1. D step: z~N(0,1); fake = G(z) under no_grad; D(real), D(fake) as two
       separate forward calls; BCEWithLogits(d_real,1) + BCEWithLogits(d_fake,0);
       zero_grad(set_to_none=True); backward; opt_d.step().
    2. G step: z~N(0,1); fake = G(z); BCEWithLogits(D(fake),1); zero_grad;
       backward; opt_g.step().
* VAE step: target=(x+1)/2; encode; reparameterise; decode;
  BCEWithLogits(sum)/B + KL (batch mean of per-sample sum), beta=1;
  Adam(lr=1e-3); zero_grad; backward; step.

``real`` / ``x`` is a fixed random tensor in [-1, 1] of shape [B,1,28,28]:
data loading is excluded.  Sampling z / eps is inside the timed region (it is
part of the step).  Loss values are read with ``.item()`` only after the timed
loop, never per step.  Each step is timed individually with
``time.perf_counter``; the MEDIAN (``ms_per_step``) and MIN (``min_ms``) over
the timed steps are reported.  ``images_per_s`` = batch / median step time
(for the GAN: real images consumed per second, one batch per step).

Output
------
One JSON object per line on stdout, e.g.::

  {"framework":"pytorch","model":"gan","batch":64,"threads":2,
   "ms_per_step":..., "min_ms":..., "images_per_s":..., "steps":30, ...}

plus one ``{"model":"gan","gflop_per_step":...}`` line (and one for the VAE)
with an analytic FLOP count (2 x multiply-adds of every conv / conv-transpose /
linear pass actually executed in a step) and a breakdown.  When
``torch.utils.flop_counter`` is available the same step is also run under
``FlopCounterMode`` and its count is reported as ``torch_flop_counter_gflop``
as a cross-check.  ``--compile`` adds lines for torch.compile'd models (or a
line with ``"error"`` if compilation fails).  Timings depend on machine load:
``loadavg_1m`` (os.getloadavg) is recorded before and after each measurement.

Usage
-----
  python3 benches/pytorch_step.py                       # both models, batch 64
  python3 benches/pytorch_step.py --model gan --steps 20
  python3 benches/pytorch_step.py --batch 128 --threads 1
  python3 benches/pytorch_step.py --compile             # also torch.compile
  python3 benches/pytorch_step.py --device cuda --compile  # on an NVIDIA GPU

Flags: --model gan|vae|all (default all), --batch 64, --steps 30,
--warmup 5, --threads N (torch.set_num_threads; default os.cpu_count()),
--compile, --no-flops (skip the FLOP lines), --seed 0, --device cpu|cuda
(on cuda each timed step ends with torch.cuda.synchronize()).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

Z_GAN = 100
Z_VAE = 16
LEAK = 0.2


# --------------------------------------------------------------------------
# Models (attribute names must match activegen's checkpoints)
# --------------------------------------------------------------------------
class Generator(nn.Module):
    """z [N,100] -> image [N,1,28,28] in [-1,1]."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(Z_GAN, 128 * 7 * 7, bias=False)
        self.bn0 = nn.BatchNorm2d(128)
        self.deconv1 = nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.deconv2 = nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=True)

    def forward(self, z):
        x = self.fc(z).view(z.shape[0], 128, 7, 7)
        x = F.relu(self.bn0(x))
        x = F.relu(self.bn1(self.deconv1(x)))
        return torch.tanh(self.deconv2(x))


class Discriminator(nn.Module):
    """image [N,1,28,28] -> logit [N,1]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 4, 2, 1, bias=True)
        self.conv2 = nn.Conv2d(64, 128, 4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(128)
        self.fc = nn.Linear(128 * 7 * 7, 1, bias=True)

    def forward(self, x):
        x = F.leaky_relu(self.conv1(x), LEAK)
        x = F.leaky_relu(self.bn2(self.conv2(x)), LEAK)
        return self.fc(torch.flatten(x, 1))


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Conv2d(1, 32, 4, 2, 1)
        self.enc2 = nn.Conv2d(32, 64, 4, 2, 1)
        self.fc_mu = nn.Linear(64 * 7 * 7, Z_VAE)
        self.fc_logvar = nn.Linear(64 * 7 * 7, Z_VAE)
        self.dec_fc = nn.Linear(Z_VAE, 64 * 7 * 7, bias=False)
        self.dec_bn0 = nn.BatchNorm2d(64)
        self.dec1 = nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False)
        self.dec_bn1 = nn.BatchNorm2d(32)
        self.dec2 = nn.ConvTranspose2d(32, 1, 4, 2, 1, bias=True)

    def encode(self, x):
        h = F.relu(self.enc1(x))
        h = F.relu(self.enc2(h))
        h = torch.flatten(h, 1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        h = self.dec_fc(z).view(z.shape[0], 64, 7, 7)
        h = F.relu(self.dec_bn0(h))
        h = F.relu(self.dec_bn1(self.dec1(h)))
        return self.dec2(h)  # logits

    def forward(self, x):
        mu, logvar = self.encode(x)
        eps = torch.randn_like(mu)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


# --------------------------------------------------------------------------
# Training steps
# --------------------------------------------------------------------------
def make_gan(batch, compile_models=False, dev="cpu", contiguous_fake=False):
    g, d = Generator().to(dev), Discriminator().to(dev)
    g.train()
    d.train()
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gf, df = (torch.compile(g), torch.compile(d)) if compile_models else (g, d)
    real = torch.rand(batch, 1, 28, 28, device=dev) * 2 - 1
    ones = torch.ones(batch, 1, device=dev)
    zeros = torch.zeros(batch, 1, device=dev)
    bce = F.binary_cross_entropy_with_logits
    state = {}

    def step():
        # 1. discriminator step
        z = torch.randn(batch, Z_GAN, device=dev)
        with torch.no_grad():
            fake = gf(z)
            if contiguous_fake:
                fake = fake.contiguous()
        d_real = df(real)
        d_fake = df(fake)
        loss_d = bce(d_real, ones) + bce(d_fake, zeros)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # 2. generator step (D params keep requires_grad=True, so PyTorch
        #    also computes D weight grads here; opt_g only updates G.)
        z = torch.randn(batch, Z_GAN, device=dev)
        fake = gf(z)
        if contiguous_fake:
            fake = fake.contiguous()
        loss_g = bce(df(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        state["loss_d"], state["loss_g"] = loss_d, loss_g

    def losses():
        return {k: round(v.item(), 5) for k, v in state.items()}

    return step, losses


def make_vae(batch, compile_models=False, beta=1.0, dev="cpu"):
    m = VAE().to(dev)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    mf = torch.compile(m) if compile_models else m
    x = torch.rand(batch, 1, 28, 28, device=dev) * 2 - 1
    target = (x + 1) / 2
    state = {}

    def step():
        logits, mu, logvar = mf(x)
        rec = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / batch
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(dim=1).mean()
        loss = rec + beta * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["loss"], state["rec"], state["kl"] = loss, rec, kl

    def losses():
        return {k: round(v.item(), 5) for k, v in state.items()}

    return step, losses


MAKERS = {"gan": make_gan, "vae": make_vae}


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def time_model(name, args, compiled, **options):
    torch.manual_seed(args.seed)
    step, losses = MAKERS[name](args.batch, compile_models=compiled, dev=args.device, **options)
    # On CUDA every step ends in a synchronize, as activegen's `bench step` ends each step
    # with a wait on the GPU: both time a whole step, queued work included.
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    load_before = loadavg()
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    rec = {
        "framework": "pytorch",
        "model": name,
        "compiled": compiled,
        **options,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "ms_per_step": round(med * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3),
        "mean_ms": round(statistics.fmean(times) * 1e3, 3),
        "images_per_s": round(args.batch / med, 1),
        "steps": args.steps,
        "warmup": args.warmup,
        "warmup_s": round(warmup_s, 3),
        "final_losses": losses(),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": loadavg(),
        "torch": torch.__version__,
    }
    return rec


# --------------------------------------------------------------------------
# Analytic FLOP count (2 x MACs of conv / convT / linear passes)
# --------------------------------------------------------------------------
def conv_macs(n, cin, cout, k, hout, wout):
    """Conv2d forward MACs (groups=1)."""
    return n * cout * hout * wout * cin * k * k


def convt_macs(n, cin, cout, k, hin, win):
    """ConvTranspose2d forward MACs: every input element scatters into a
    cout x k x k window (same count as the conv it is the adjoint of)."""
    return n * cin * hin * win * cout * k * k


def lin_macs(n, fin, fout):
    return n * fin * fout


def gan_flops(b):
    """Per-layer forward MACs; a layer's weight-grad pass and its input-grad
    pass each cost the same MACs as its forward pass."""
    g_layers = {  # name: fwd MACs
        "G.fc": lin_macs(b, Z_GAN, 128 * 49),
        "G.deconv1": convt_macs(b, 128, 64, 4, 7, 7),
        "G.deconv2": convt_macs(b, 64, 1, 4, 14, 14),
    }
    d_layers = {
        "D.conv1": conv_macs(b, 1, 64, 4, 14, 14),
        "D.conv2": conv_macs(b, 64, 128, 4, 7, 7),
        "D.fc": lin_macs(b, 128 * 49, 1),
    }
    g_fwd = sum(g_layers.values())
    d_fwd = sum(d_layers.values())
    # input grads: D.conv1's input is needed only in the G step; G.fc's input
    # (z) never needs a grad.
    d_bwd_data_no_conv1 = d_fwd - d_layers["D.conv1"]
    g_bwd_data = g_fwd - g_layers["G.fc"]
    parts = {  # MACs
        "dstep_G_fwd_nograd": g_fwd,
        "dstep_D_fwd_real_fake": 2 * d_fwd,
        "dstep_D_bwd_weight_x2": 2 * d_fwd,
        "dstep_D_bwd_data_x2_no_conv1": 2 * d_bwd_data_no_conv1,
        "gstep_G_fwd": g_fwd,
        "gstep_D_fwd": d_fwd,
        "gstep_D_bwd_data": d_fwd,
        "gstep_D_bwd_weight_(pytorch_computes)": d_fwd,
        "gstep_G_bwd_weight": g_fwd,
        "gstep_G_bwd_data_no_fc": g_bwd_data,
    }
    total = sum(parts.values())
    gf = lambda macs: round(2 * macs / 1e9, 4)
    return {
        "model": "gan",
        "batch": b,
        "gflop_per_step": gf(total),
        "gflop_per_step_without_gstep_D_weight_grads": gf(total - d_fwd),
        "breakdown_gflop": {k: gf(v) for k, v in parts.items()},
        "fwd_gflop_per_layer": {k: gf(v) for k, v in {**g_layers, **d_layers}.items()},
        "note": "2*MACs of conv/convT/linear only (BN, activations, loss, Adam "
                "excluded); counted total includes D weight grads in the G step "
                "because D params keep requires_grad=True, as PyTorch does",
    }


def vae_flops(b):
    layers = {
        "enc1": conv_macs(b, 1, 32, 4, 14, 14),
        "enc2": conv_macs(b, 32, 64, 4, 7, 7),
        "fc_mu": lin_macs(b, 64 * 49, Z_VAE),
        "fc_logvar": lin_macs(b, 64 * 49, Z_VAE),
        "dec_fc": lin_macs(b, Z_VAE, 64 * 49),
        "dec1": convt_macs(b, 64, 32, 4, 7, 7),
        "dec2": convt_macs(b, 32, 1, 4, 14, 14),
    }
    fwd = sum(layers.values())
    parts = {"fwd": fwd, "bwd_weight": fwd, "bwd_data_no_enc1": fwd - layers["enc1"]}
    gf = lambda macs: round(2 * macs / 1e9, 4)
    return {
        "model": "vae",
        "batch": b,
        "gflop_per_step": gf(sum(parts.values())),
        "breakdown_gflop": {k: gf(v) for k, v in parts.items()},
        "fwd_gflop_per_layer": {k: gf(v) for k, v in layers.items()},
    }


def torch_counted_gflop(name, batch):
    """Cross-check: run one eager step under FlopCounterMode (if present)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    torch.manual_seed(0)
    step, _ = MAKERS[name](batch)  # on the CPU: the count does not depend on the device
    step()  # create Adam state outside the counted region (no matmuls anyway)
    with FlopCounterMode(display=False) as fc:
        step()
    return round(fc.get_total_flops() / 1e9, 4)


# --------------------------------------------------------------------------
def emit(obj):
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["gan", "vae", "all"], default="all")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd models")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")

    torch.set_num_threads(args.threads)
    models = ["gan", "vae"] if args.model == "all" else [args.model]

    for name in models:
        if not args.no_flops:
            rec = gan_flops(args.batch) if name == "gan" else vae_flops(args.batch)
            try:
                rec["torch_flop_counter_gflop"] = torch_counted_gflop(name, args.batch)
            except Exception as e:  # cross-check only; never fatal
                rec["torch_flop_counter_error"] = f"{type(e).__name__}: {e}"[:300]
            emit(rec)
        emit(time_model(name, args, compiled=False))
        if args.compile:
            # torch 2.11 + CUDA failed to compile the GAN step (an Inductor stride assertion
            # in convolution_backward on G's output fed to D); the retry makes that output
            # contiguous, which changes no value.
            retries = [{}, {"contiguous_fake": True}] if name == "gan" else [{}]
            for options in retries:
                try:
                    emit(time_model(name, args, compiled=True, **options))
                    break
                except Exception as e:
                    emit({
                        "framework": "pytorch", "model": name, "compiled": True, **options,
                        "batch": args.batch, "threads": torch.get_num_threads(),
                        "torch": torch.__version__,
                        "error": f"{type(e).__name__}: {e}"[:500],
                    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
