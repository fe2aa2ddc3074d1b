//! PyTorch interop: tests/golden/torch_interop.py loaded our checkpoints with
//! `safetensors.torch.load_file` + `load_state_dict(strict=True)` into plain nn.Modules and
//! decoded fixed latents (torch_gan.npy, torch_vae.npy). Our samples of the same latents
//! must match to 1e-4.

mod common;

use std::path::PathBuf;

use activegen::train;
use activegen::Tensor;
use common::{assert_close, gpu};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/fixtures/interop")
        .join(name)
}

fn ours_vs_torch(model: &str) {
    let g = gpu();
    let dir = fixture(model);
    let cfg = train::load_config(&dir.join("config.toml")).unwrap();
    let mut m = train::Model::new(&g, &cfg, 0).unwrap();
    m.load(&g, &dir).unwrap();
    let (zs, z) = activegen::npy::read_npy_f32(fixture(&format!("z_{model}.npy"))).unwrap();
    let (ts, want) = activegen::npy::read_npy_f32(fixture(&format!("torch_{model}.npy"))).unwrap();
    let imgs = m
        .sample(&g, &Tensor::from_slice(&g, &zs, &z).unwrap(), None)
        .unwrap();
    assert_eq!(imgs.shape(), ts.as_slice(), "{model}: image shape");
    assert_close(
        &format!("{model} samples vs PyTorch"),
        &imgs.to_vec(&g),
        &want,
        1e-4,
        0.0,
    );
}

#[test]
fn gan_checkpoint_decodes_like_pytorch() {
    ours_vs_torch("gan");
}

#[test]
fn vae_checkpoint_decodes_like_pytorch() {
    ours_vs_torch("vae");
}
