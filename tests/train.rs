//! Training runs end to end on tiny models: resume equivalence, checkpoints, divergence.

mod common;

use std::path::Path;

use activegen::checkpoint::Loaded;
use activegen::train::{self, ModelKind, TrainConfig};
use common::gpu;

#[allow(clippy::field_reassign_with_default)]
fn tiny(model: ModelKind, steps: usize) -> TrainConfig {
    let mut c = TrainConfig::default();
    c.model = model;
    c.steps = steps;
    c.batch = 16;
    c.seed = 7;
    c.gan.g_width = 8;
    c.gan.d_width = 8;
    c.gan.z_dim = 8;
    c.vae.width = 8;
    c.vae.z_dim = 4;
    c.ema_decay = 0.9;
    c.log_every = 2;
    c.sample_every = 3;
    c.checkpoint_every = 3;
    c
}

/// Every tensor of every safetensors file in `a` equals the one in `b`, bit for bit.
fn assert_same_checkpoint(a: &Path, b: &Path, files: &[&str]) {
    for f in files {
        let (fa, fb) = (
            Loaded::open(&a.join(f)).unwrap(),
            Loaded::open(&b.join(f)).unwrap(),
        );
        let mut names = fa.names();
        names.sort();
        let mut names_b = fb.names();
        names_b.sort();
        assert_eq!(names, names_b, "{f}: different tensors");
        for n in names.iter().filter(|n| !n.ends_with("num_batches_tracked")) {
            let st = safetensors::SafeTensors::deserialize(&std::fs::read(a.join(f)).unwrap())
                .unwrap()
                .tensor(n)
                .unwrap()
                .shape()
                .to_vec();
            let (va, vb) = (fa.f32(n, &st).unwrap(), fb.f32(n, &st).unwrap());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&va) == bits(&vb),
                "{f}: tensor {n} differs between the runs"
            );
        }
        for n in names.iter().filter(|n| n.ends_with("num_batches_tracked")) {
            assert_eq!(fa.i64_scalar(n), fb.i64_scalar(n), "{f}: {n} differs");
        }
    }
}

fn resume_matches_uninterrupted(model: ModelKind, files: &[&str]) {
    let root =
        std::env::temp_dir().join(format!("activegen-resume-{model:?}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (straight, split) = (root.join("straight"), root.join("split"));
    let g = gpu();
    train::run_train(&g, &tiny(model, 6), &straight, false, false).unwrap();
    // The "interrupted" run stops after its first checkpoint, then resumes in a new process-like state.
    let g2 = gpu();
    train::run_train(&g2, &tiny(model, 3), &split, false, false).unwrap();
    let g3 = gpu();
    train::run_train(&g3, &tiny(model, 6), &split, true, false).unwrap();
    assert_same_checkpoint(&straight, &split, files);
    let metrics = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().count() >= 3,
        "metrics.jsonl has too few lines:\n{metrics}"
    );
    assert!(split.join("samples/step_00006.png").exists());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_resumed_gan_run_ends_with_the_same_weights_as_an_uninterrupted_one() {
    resume_matches_uninterrupted(
        ModelKind::Gan,
        &[
            "generator.safetensors",
            "discriminator.safetensors",
            "generator_ema.safetensors",
            "optimizer.safetensors",
        ],
    );
}

#[test]
fn a_resumed_vae_run_ends_with_the_same_weights_as_an_uninterrupted_one() {
    resume_matches_uninterrupted(
        ModelKind::Vae,
        &["vae.safetensors", "optimizer.safetensors"],
    );
}

/// `compile_step_kernels` runs the step's kernels once on a scratch model, up front: the
/// first real step and sample grid then build no pipeline (on lavapipe: compile no machine
/// code), the random stream is where it was, and the step's losses are those of a run
/// without it.
#[test]
fn compiling_the_step_up_front_leaves_the_first_step_nothing_to_build_and_changes_no_number() {
    for (model, diffaug) in [
        (ModelKind::Gan, false),
        (ModelKind::Gan, true),
        (ModelKind::Vae, false),
    ] {
        let mut cfg = tiny(model, 1);
        cfg.gan.num_classes = (model == ModelKind::Gan) as usize;
        cfg.gan.diffaug = diffaug;
        let first_step = |warm_up: bool| {
            let g = gpu();
            g.set_seed(cfg.seed);
            let mut m = train::Model::new(&g, &cfg, 3).unwrap();
            if warm_up {
                let rng = g.rng_state();
                train::compile_step_kernels(&g, &cfg, 3).unwrap();
                assert_eq!(
                    g.rng_state(),
                    rng,
                    "{model:?}: the warm-up moved the random stream"
                );
            }
            let built = g.device.pipelines.built();
            let real =
                activegen::engine::ops::rng::uniform(&g, &[16, 1, 28, 28], -1.0, 1.0).unwrap();
            let onehot =
                activegen::data::one_hot(&g, &[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0], 3)
                    .unwrap();
            let losses = m
                .train_step(&g, &real, m.conditional().then_some(&onehot))
                .unwrap();
            let values: Vec<u32> = losses.values.iter().map(|v| v.item(&g).to_bits()).collect();
            let (z, labels) = train::fixed_latents(&g, 1, 64, m.z_dim(), m.num_classes()).unwrap();
            m.sample(&g, &z, labels.as_ref()).unwrap();
            g.sync();
            (g.device.pipelines.built() - built, values)
        };
        let (cold_builds, cold) = first_step(false);
        let (warm_builds, warm) = first_step(true);
        assert!(
            cold_builds > 0,
            "{model:?}: a step without the warm-up built nothing"
        );
        assert_eq!(
            warm_builds, 0,
            "{model:?}: the first step and sample after the warm-up built {warm_builds} pipelines"
        );
        assert_eq!(
            cold, warm,
            "{model:?}: the warm-up changed the first step's losses"
        );
    }
}

/// Three training steps of a standard-width model (batch 16) on a fresh device set up by
/// `setup`: every loss's bits, and the kernels of the third step with their call counts.
fn three_steps(
    model: ModelKind,
    setup: impl Fn(&activegen::Engine),
) -> (Vec<u32>, Vec<(String, u64)>) {
    let mut cfg = TrainConfig {
        model,
        ..Default::default()
    };
    cfg.apply_preset("full").unwrap();
    cfg.batch = 16;
    let g = gpu();
    setup(&g);
    g.set_seed(5);
    let mut m = train::Model::new(&g, &cfg, 10).unwrap();
    let real = activegen::engine::ops::rng::uniform(&g, &[16, 1, 28, 28], -1.0, 1.0).unwrap();
    let mut losses = vec![];
    let mut kernels = vec![];
    for step in 0..3 {
        if step == 2 {
            g.device.start_profiling();
        }
        let l = m.train_step(&g, &real, None).unwrap();
        losses.extend(l.values.iter().map(|v| v.item(&g).to_bits()));
        if step == 2 {
            kernels = g
                .device
                .stop_profiling()
                .into_iter()
                .map(|(name, s)| (name, s.calls))
                .collect();
        }
    }
    (losses, kernels)
}

fn calls(kernels: &[(String, u64)], matching: impl Fn(&str) -> bool) -> u64 {
    kernels
        .iter()
        .filter(|(name, _)| matching(name))
        .map(|(_, c)| c)
        .sum()
}

/// The tape fuses an activation's backward pass into the kernel that computes the gradient
/// flowing into it (`tape::ActFusion`: the VAE encoder's two ReLUs, the DCGAN
/// discriminator's first leaky ReLU). Standard-width models, so the fused kernels run (the
/// sub-pixel data gradient from 32 channels, linear_cm's scattering GEMM): three steps give
/// the same losses bit for bit with the fusion on and off, and with it on the activation
/// kernels those layers ran are gone.
#[test]
fn fusing_activation_gradients_changes_no_number_and_drops_their_kernels() {
    for model in [ModelKind::Gan, ModelKind::Vae] {
        let (plain, plain_k) = three_steps(model, |g| g.update_policy(|p| p.fuse_act_grad = false));
        let (fused, fused_k) = three_steps(model, |g| g.update_policy(|p| p.fuse_act_grad = true));
        assert_eq!(plain, fused, "{model:?}: fusing changed the losses");
        let act = |k: &[(String, u64)]| calls(k, |n| n.starts_with("activation_backward"));
        let in_store = |k: &[(String, u64)]| calls(k, |n| n.contains("ACT_GRAD"));
        assert_eq!(
            in_store(&plain_k),
            0,
            "{model:?}: fused kernels ran with the fusion off"
        );
        assert!(
            in_store(&fused_k) > 0 && act(&fused_k) + in_store(&fused_k) <= act(&plain_k),
            "{model:?}: activation kernels {} unfused, {} fused (+{} fused stores)",
            act(&plain_k),
            act(&fused_k),
            in_store(&fused_k)
        );
    }
}

/// Stride-2 4x4 convolutions from 8 input and 32 output channels run as implicit GEMMs
/// (`ops::conv_implicit`: forward, the transposed convolution's data gradient, and both
/// weight gradients, gathering from the images): the same losses bit for bit as the column
/// form, over three steps of both standard-width models, with fewer im2col column matrices.
#[test]
fn implicit_convolutions_change_no_number_and_drop_column_matrices() {
    for model in [ModelKind::Gan, ModelKind::Vae] {
        let (columns, columns_k) =
            three_steps(model, |g| g.update_policy(|p| p.implicit_conv = false));
        let (implicit, implicit_k) =
            three_steps(model, |g| g.update_policy(|p| p.implicit_conv = true));
        assert_eq!(
            columns, implicit,
            "{model:?}: the implicit GEMMs changed the losses"
        );
        let im2col = |k: &[(String, u64)]| calls(k, |n| n.starts_with("im2col"));
        let gathered = |k: &[(String, u64)]| calls(k, |n| n.starts_with("conv_implicit"));
        assert_eq!(
            gathered(&columns_k),
            0,
            "{model:?}: implicit kernels ran while off"
        );
        assert!(
            gathered(&implicit_k) >= 4 && im2col(&implicit_k) + 2 <= im2col(&columns_k),
            "{model:?}: im2col {} with columns, {} implicit (+{} implicit GEMMs)",
            im2col(&columns_k),
            im2col(&implicit_k),
            gathered(&implicit_k)
        );
    }
}

#[test]
fn a_conditional_hinge_gan_trains_and_its_checkpoint_loads_back() {
    let dir = std::env::temp_dir().join(format!("activegen-cond-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = tiny(ModelKind::Gan, 3);
    cfg.gan.num_classes = 1;
    cfg.gan.loss = activegen::models::dcgan::GanLoss::Hinge;
    let g = gpu();
    let out = train::run_train(&g, &cfg, &dir, false, false).unwrap();
    assert!(
        out.last_losses.iter().all(|(_, v)| v.is_finite()),
        "{:?}",
        out.last_losses
    );
    let saved = train::load_config(&dir.join("config.toml")).unwrap();
    let mut model = train::Model::new(&g, &saved, 10).unwrap();
    model.load(&g, &dir).unwrap();
    assert_eq!(model.num_classes(), 10);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_of_another_width_is_refused_with_the_file_and_tensor_named() {
    let dir = std::env::temp_dir().join(format!("activegen-shape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let g = gpu();
    train::run_train(&g, &tiny(ModelKind::Gan, 3), &dir, false, false).unwrap();
    let mut wider = tiny(ModelKind::Gan, 3);
    wider.gan.g_width = 16;
    let mut model = train::Model::new(&g, &wider, 0).unwrap();
    let e = model.load(&g, &dir).unwrap_err().to_string();
    assert!(
        e.contains("generator.safetensors") && e.contains("fc.weight") && e.contains("shape"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nan_and_exploding_losses_are_reported_as_divergence() {
    let e = train::check_losses(17, &["loss_d", "loss_g"], &[0.5, f32::NAN])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("diverged at step 17") && e.contains("loss_g"),
        "{e}"
    );
    assert!(train::check_losses(3, &["loss"], &[1e9]).is_err());
    assert!(train::check_losses(3, &["loss"], &[0.7]).is_ok());
}

#[test]
fn absurd_settings_are_refused_with_the_flag_named() {
    let mut c = tiny(ModelKind::Gan, 0);
    assert!(c.validate().unwrap_err().to_string().contains("--steps"));
    c.steps = 5;
    c.batch = 1;
    assert!(c.validate().unwrap_err().to_string().contains("--batch"));
    c.batch = 8;
    c.lr_g = -1.0;
    assert!(c.validate().unwrap_err().to_string().contains("--lr"));
    assert!("nope"
        .parse::<ModelKind>()
        .unwrap_err()
        .to_string()
        .contains("unknown model 'nope'"));
}

#[test]
fn parameter_gradients_are_reachable_by_name() {
    use activegen::engine::nn::{grad_by_name, Module};
    use activegen::models::dcgan::{Discriminator, GanConfig};
    let g = gpu();
    g.set_seed(1);
    let cfg = GanConfig {
        d_width: 8,
        ..GanConfig::default()
    };
    let d = Discriminator::new(&g, &cfg).unwrap();
    let x = activegen::engine::ops::rng::normal(&g, &[4, 1, 28, 28], 0.0, 1.0).unwrap();
    let logits = d.forward(&g, &x, None, true, false).unwrap();
    let l = activegen::engine::ops::reduce::mean_all(&g, &logits).unwrap();
    let grads = activegen::engine::tape::backward(&g, &l).unwrap();
    for p in d.params() {
        let gr = grad_by_name(&d, &grads, &p.name)
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        assert_eq!(gr.shape(), p.tensor.shape(), "{}", p.name);
    }
    assert!(grad_by_name(&d, &grads, "no.such.weight").is_none());
}

#[test]
fn diffaug_trains_and_draws_from_the_stream_only_when_on() {
    // Off: the model is the one without the setting, step for step. On: the same first
    // draw of z, then augmentation draws, so other losses; finite and reproducible.
    let run = |diffaug: bool| -> (Vec<u32>, (u64, u64)) {
        let mut cfg = tiny(ModelKind::Gan, 1);
        cfg.gan.diffaug = diffaug;
        let g = gpu();
        g.set_seed(cfg.seed);
        let mut m = train::Model::new(&g, &cfg, 0).unwrap();
        let real = activegen::engine::ops::rng::uniform(&g, &[16, 1, 28, 28], -1.0, 1.0).unwrap();
        let mut bits = vec![];
        for _ in 0..3 {
            let l = m.train_step(&g, &real, None).unwrap();
            for v in &l.values {
                let x = v.item(&g);
                assert!(x.is_finite(), "diffaug {diffaug}: loss {x}");
                bits.push(x.to_bits());
            }
        }
        (bits, g.rng_state())
    };
    let (off, off_rng) = run(false);
    let (on, on_rng) = run(true);
    assert_ne!(off, on, "DiffAugment changed nothing");
    // Per step: 2 z draws of [16, z] and, when on, 3 augmentations of 16 x 8 draws.
    assert_eq!(on_rng.1 - off_rng.1, 3 * 3 * 16 * 8);
    assert_eq!(run(true).0, on, "the same seed, other losses");
}

#[test]
fn spectral_norm_brings_the_largest_singular_value_to_one_and_persists_u() {
    // Repeated training passes refine u: W / σ then has spectral norm 1, as a long power
    // iteration on the host finds.
    let g = gpu();
    g.set_seed(9);
    let w = activegen::engine::ops::rng::normal(&g, &[6, 3, 2, 2], 0.0, 1.0).unwrap();
    let sn = activegen::engine::nn::SpectralNorm::new(&g, 6).unwrap();
    let mut ws = vec![];
    for _ in 0..30 {
        ws = activegen::engine::tape::no_grad(&g, || sn.apply(&g, &w, true))
            .unwrap()
            .to_vec(&g);
    }
    let (rows, cols) = (6, 12);
    let mut v = vec![1.0f64; cols];
    let mut s = 0.0;
    for _ in 0..500 {
        let mut u = vec![0.0f64; rows];
        for i in 0..rows {
            u[i] = (0..cols).map(|j| ws[i * cols + j] as f64 * v[j]).sum();
        }
        let nu = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        u.iter_mut().for_each(|x| *x /= nu);
        for j in 0..cols {
            v[j] = (0..rows).map(|i| ws[i * cols + j] as f64 * u[i]).sum();
        }
        s = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= s);
    }
    assert!((s - 1.0).abs() < 1e-3, "largest singular value {s}");
    // Frozen passes (scoring, the generator's step) leave u alone.
    let before = sn.u.to_vec(&g);
    activegen::engine::tape::no_grad(&g, || sn.apply(&g, &w.detach(&g), false)).unwrap();
    assert_eq!(before, sn.u.to_vec(&g));
    // A discriminator's u vectors are part of its state (checkpoints, snapshots).
    let mut cfg = tiny(ModelKind::Gan, 1);
    cfg.gan.spectral_norm = true;
    let m = train::Model::new(&g, &cfg, 0).unwrap();
    let train::Model::Gan(m) = m else {
        unreachable!()
    };
    use activegen::engine::nn::Module;
    let names: Vec<String> = m.disc.buffers().iter().map(|b| b.name.clone()).collect();
    assert!(
        names.contains(&"conv1.weight_u".to_string()) && names.contains(&"fc.weight_u".to_string()),
        "{names:?}"
    );
}

/// Each file's bytes, by name.
fn file_bytes(dir: &Path, files: &[&str]) -> Vec<Vec<u8>> {
    files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
}

const GAN_FILES: [&str; 4] = [
    "generator.safetensors",
    "discriminator.safetensors",
    "generator_ema.safetensors",
    "optimizer.safetensors",
];

#[test]
fn identical_runs_write_byte_identical_checkpoints() {
    let root = std::env::temp_dir().join(format!("activegen-bytes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let g = gpu();
    train::run_train(&g, &tiny(ModelKind::Gan, 3), &root.join("a"), false, false).unwrap();
    let g2 = gpu();
    train::run_train(&g2, &tiny(ModelKind::Gan, 3), &root.join("b"), false, false).unwrap();
    // The optimizer file's metadata (two step counters) is a map: its order must be fixed.
    assert!(
        file_bytes(&root.join("a"), &GAN_FILES) == file_bytes(&root.join("b"), &GAN_FILES),
        "the same run wrote different bytes"
    );
    // The metadata keys are written sorted (the map's own order varies from run to run).
    let opt = std::fs::read(root.join("a/optimizer.safetensors")).unwrap();
    let n = u64::from_le_bytes(opt[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(opt[8..8 + n].to_vec()).unwrap();
    let (d, gen) = (
        header.find("\"discriminator.step\"").unwrap(),
        header.find("\"generator.step\"").unwrap(),
    );
    assert!(d < gen, "metadata keys out of order: {header}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_checkpoint_mixed_from_two_steps_is_refused_and_stale_temporaries_are_removed() {
    let root = std::env::temp_dir().join(format!("activegen-mixed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (early, late) = (root.join("early"), root.join("late"));
    let g = gpu();
    train::run_train(&g, &tiny(ModelKind::Gan, 3), &early, false, false).unwrap();
    train::run_train(&g, &tiny(ModelKind::Gan, 6), &late, false, false).unwrap();
    // A crash while step 6's checkpoint was renamed into place: the generator is new, the
    // rest and state.json are step 3's.
    std::fs::copy(
        late.join("generator.safetensors"),
        early.join("generator.safetensors"),
    )
    .unwrap();
    let stale = early.join("optimizer.safetensors.tmp4242-7");
    std::fs::write(&stale, b"half a file").unwrap();
    let e = train::run_train(&g, &tiny(ModelKind::Gan, 6), &early, true, false)
        .err()
        .expect("a mixed checkpoint must be refused")
        .to_string();
    assert!(
        e.contains("generator.safetensors") && e.contains("step 3") && e.contains("refused"),
        "{e}"
    );
    assert!(!stale.exists(), "a stale temporary file was left in place");
    // Put step 3's generator back (from an identical run): the resume then goes through.
    let again = root.join("again");
    train::run_train(&g, &tiny(ModelKind::Gan, 3), &again, false, false).unwrap();
    std::fs::copy(
        again.join("generator.safetensors"),
        early.join("generator.safetensors"),
    )
    .unwrap();
    train::run_train(&g, &tiny(ModelKind::Gan, 6), &early, true, false).unwrap();
    assert_same_checkpoint(&early, &late, &GAN_FILES);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn non_finite_weights_are_never_written_as_a_checkpoint() {
    let dir = std::env::temp_dir().join(format!("activegen-nanckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let g = gpu();
    let model = train::Model::new(&g, &tiny(ModelKind::Gan, 3), 0).unwrap();
    let files = model.save(&g, &dir).unwrap();
    assert_eq!(files.len(), 4, "{files:?}");
    // Saved as staged files, which a commit publishes.
    activegen::checkpoint::Manifest::of_staged(&dir, &files)
        .unwrap()
        .publish(&dir)
        .unwrap();
    let before = file_bytes(&dir, &GAN_FILES);
    let train::Model::Gan(m) = &model else {
        unreachable!()
    };
    use activegen::engine::nn::Module;
    let p = &m.disc.params()[0];
    let mut v = p.tensor.to_vec(&g);
    v[0] = f32::NAN;
    p.tensor.write(&g, &v);
    let e = model.save(&g, &dir).unwrap_err().to_string();
    assert!(
        e.contains("discriminator.safetensors") && e.contains(&p.name) && e.contains("not written"),
        "{e}"
    );
    assert!(
        file_bytes(&dir, &GAN_FILES) == before,
        "a refused checkpoint changed files"
    );
    assert!(
        GAN_FILES
            .iter()
            .all(|f| !activegen::checkpoint::staged(&dir.join(f)).exists()),
        "a refused checkpoint staged files"
    );
    // A file with a NaN written by other means is refused at load, file and tensor named.
    activegen::checkpoint::save_module(&g, &m.disc, &dir.join("discriminator.safetensors"), None)
        .unwrap();
    let mut fresh = train::Model::new(&g, &tiny(ModelKind::Gan, 3), 0).unwrap();
    let e = format!("{:#}", fresh.load(&g, &dir).unwrap_err());
    assert!(
        e.contains("discriminator.safetensors") && e.contains(&p.name) && e.contains("non-finite"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_collapsed_gan_window_is_recognised_and_a_working_one_is_not() {
    let names = ["loss_d", "loss_g"];
    let rows = |d: f32, g: &[f32]| -> Vec<Vec<f32>> { g.iter().map(|&x| vec![d, x]).collect() };
    // The case: D at 0, G stuck at 8955.6.
    assert!(train::collapsed_window(&names, &rows(0.0, &[8955.6; 50])));
    // D near 0 but G still moving, G constant but D working, and too short a window.
    assert!(!train::collapsed_window(
        &names,
        &rows(1e-4, &[3.0, 3.5, 2.9])
    ));
    assert!(!train::collapsed_window(&names, &rows(0.7, &[2.0; 50])));
    assert!(!train::collapsed_window(&names, &rows(0.0, &[5.0])));
    // A VAE's losses never count.
    assert!(!train::collapsed_window(
        &["loss", "recon", "kl"],
        &vec![vec![0.0; 3]; 50]
    ));
}

/// The sub-pixel data gradient (`ops::conv_subpixel`: the transposed convolutions'
/// forward passes and the stride-2 convolutions' data gradients, from 32 channels) sums a
/// pixel's taps inside one GEMM, where the column form sums the GEMM's per-tap columns
/// afterwards (col2im): the same math in another order, so the losses agree to rounding
/// but not bit for bit. This is why the tuner does not choose between the two forms (it
/// only swaps forms that sum in the same order, tests/tune.rs).
#[test]
fn subpixel_data_gradients_agree_with_the_column_form_to_rounding() {
    for model in [ModelKind::Gan, ModelKind::Vae] {
        let (columns, columns_k) = three_steps(model, |g| g.update_policy(|p| p.subpixel = false));
        let (subpixel, subpixel_k) = three_steps(model, |g| g.update_policy(|p| p.subpixel = true));
        let ran = |k: &[(String, u64)]| calls(k, |n| n.starts_with("conv_subpixel"));
        assert_eq!(
            ran(&columns_k),
            0,
            "{model:?}: sub-pixel kernels ran while off"
        );
        assert!(ran(&subpixel_k) > 0, "{model:?}: no sub-pixel kernel ran");
        for (c, s) in columns.iter().zip(&subpixel) {
            let (c, s) = (f32::from_bits(*c), f32::from_bits(*s));
            assert!(
                (c - s).abs() <= 1e-4 * c.abs().max(1.0),
                "{model:?}: losses {c} (columns) and {s} (sub-pixel) differ beyond rounding"
            );
        }
    }
}
