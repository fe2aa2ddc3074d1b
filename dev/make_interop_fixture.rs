//! Writes tests/golden/fixtures/interop: small GAN and VAE checkpoints trained for a few
//! steps, and the latents to decode. tests/golden/torch_interop.py then decodes them in
//! PyTorch. Run: cargo run --release --example make_interop_fixture
use activegen::train::{self, ModelKind, TrainConfig};

#[allow(clippy::field_reassign_with_default)]
fn main() -> anyhow::Result<()> {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fixtures/interop");
    let g = activegen::Engine::new(None)?;
    for (kind, name) in [(ModelKind::Gan, "gan"), (ModelKind::Vae, "vae")] {
        let mut c = TrainConfig::default();
        c.model = kind;
        c.steps = 20;
        c.batch = 16;
        c.seed = 3;
        c.gan.g_width = 16;
        c.gan.d_width = 16;
        c.gan.z_dim = 12;
        c.vae.width = 16;
        c.vae.z_dim = 6;
        c.ema_decay = 0.0;
        c.log_every = 10;
        c.sample_every = 1000;
        c.checkpoint_every = 20;
        let dir = root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        train::run_train(&g, &c, &dir, false, false)?;
        // Keep only what sampling needs.
        for f in ["optimizer.safetensors", "metrics.jsonl", "state.json"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let _ = std::fs::remove_dir_all(dir.join("samples"));
        let z_dim = if kind == ModelKind::Gan {
            c.gan.z_dim
        } else {
            c.vae.z_dim
        };
        let mut r = activegen::util::HostRng::new(11, 0);
        let z: Vec<f32> = (0..8 * z_dim).map(|_| r.normal() as f32).collect();
        activegen::npy::write_npy_f32(root.join(format!("z_{name}.npy")), &[8, z_dim], &z)?;
    }
    println!("wrote {}", root.display());
    Ok(())
}
