#!/usr/bin/env python3
"""Loads activegen checkpoints into plain PyTorch modules and decodes fixed latents.

The modules below are the PyTorch twins of activegen's DCGAN generator and conv VAE
(src/models/dcgan.rs, src/models/vae.rs); their state_dict names and shapes are the
checkpoint's, so `load_state_dict(load_file(...), strict=True)` must succeed. The images
they produce are written as torch_gan.npy / torch_vae.npy, which tests/interop.rs compares
with activegen's own samples of the same latents (max abs diff <= 1e-4).

Regenerate (after `cargo run --release --example make_interop_fixture`):
    pip install torch safetensors numpy
    python3 tests/golden/torch_interop.py
"""
import os
import tomllib

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
import torch.nn.functional as F

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "interop")
STAGES = {28: (2, 7), 32: (3, 4), 64: (4, 4)}


class Generator(nn.Module):
    """z -> Linear -> BN -> ReLU -> (ConvT -> BN -> ReLU)* -> ConvT -> tanh."""

    def __init__(self, z_dim, width, resolution=28, channels=1, num_classes=0):
        super().__init__()
        levels, self.start = STAGES[resolution]
        self.start_ch = width << (levels - 1)
        self.fc = nn.Linear(z_dim + num_classes, self.start_ch * self.start**2, bias=False)
        self.bn0 = nn.BatchNorm2d(self.start_ch)
        self.levels = levels
        for i in range(1, levels + 1):
            cin = width << (levels - i)
            last = i == levels
            cout = channels if last else width << (levels - i - 1)
            setattr(self, f"deconv{i}", nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=last))
            if not last:
                setattr(self, f"bn{i}", nn.BatchNorm2d(cout))

    def forward(self, z):
        h = self.fc(z).view(z.shape[0], self.start_ch, self.start, self.start)
        h = F.relu(self.bn0(h))
        for i in range(1, self.levels):
            h = F.relu(getattr(self, f"bn{i}")(getattr(self, f"deconv{i}")(h)))
        return torch.tanh(getattr(self, f"deconv{self.levels}")(h))


class VAE(nn.Module):
    """Encoder (Conv -> ReLU)* -> mu, logvar; decoder mirrors the generator, logits out."""

    def __init__(self, z_dim, width, resolution=28, channels=1):
        super().__init__()
        levels, self.start = STAGES[resolution]
        self.levels, self.top = levels, width << (levels - 1)
        for i in range(1, levels + 1):
            cin = channels if i == 1 else width << (i - 2)
            setattr(self, f"enc{i}", nn.Conv2d(cin, width << (i - 1), 4, 2, 1))
        feat = self.top * self.start**2
        self.fc_mu = nn.Linear(feat, z_dim)
        self.fc_logvar = nn.Linear(feat, z_dim)
        self.dec_fc = nn.Linear(z_dim, feat, bias=False)
        self.dec_bn0 = nn.BatchNorm2d(self.top)
        for i in range(1, levels + 1):
            cin = width << (levels - i)
            last = i == levels
            cout = channels if last else width << (levels - i - 1)
            setattr(self, f"dec{i}", nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=last))
            if not last:
                setattr(self, f"dec_bn{i}", nn.BatchNorm2d(cout))

    def decode(self, z):
        h = self.dec_fc(z).view(z.shape[0], self.top, self.start, self.start)
        h = F.relu(self.dec_bn0(h))
        for i in range(1, self.levels):
            h = F.relu(getattr(self, f"dec_bn{i}")(getattr(self, f"dec{i}")(h)))
        logits = getattr(self, f"dec{self.levels}")(h)
        return torch.sigmoid(logits) * 2 - 1  # images in [-1, 1], as activegen's sample


def main():
    torch.set_default_dtype(torch.float64)  # the reference in double precision
    with open(os.path.join(HERE, "gan", "config.toml"), "rb") as f:
        cfg = tomllib.load(f)["gan"]
    gen = Generator(cfg["z_dim"], cfg["g_width"], cfg["resolution"], cfg["channels"])
    gen.load_state_dict(load_file(os.path.join(HERE, "gan", "generator.safetensors")), strict=True)
    gen.double().eval()
    z = torch.from_numpy(np.load(os.path.join(HERE, "z_gan.npy")).astype(np.float64))
    with torch.no_grad():
        np.save(os.path.join(HERE, "torch_gan.npy"), gen(z).numpy().astype(np.float32))

    with open(os.path.join(HERE, "vae", "config.toml"), "rb") as f:
        cfg = tomllib.load(f)["vae"]
    vae = VAE(cfg["z_dim"], cfg["width"], cfg["resolution"], cfg["channels"])
    vae.load_state_dict(load_file(os.path.join(HERE, "vae", "vae.safetensors")), strict=True)
    vae.double().eval()
    z = torch.from_numpy(np.load(os.path.join(HERE, "z_vae.npy")).astype(np.float64))
    with torch.no_grad():
        np.save(os.path.join(HERE, "torch_vae.npy"), vae.decode(z).numpy().astype(np.float32))
    print("wrote torch_gan.npy and torch_vae.npy with torch", torch.__version__)


if __name__ == "__main__":
    main()
