//! The command line on bad input: every mistake gets one line naming the file or flag and
//! the problem, a failing exit status, and no panic.

mod common;

use std::path::PathBuf;

fn activegen(args: &[&str]) -> (bool, String, String) {
    activegen_with(args, &[])
}

fn activegen_with(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    common::run_activegen(args, env)
}

/// Runs a command that must fail with one line on stderr containing every `needle`.
fn refused(args: &[&str], needles: &[&str]) {
    refused_with(args, &[], needles)
}

fn refused_with(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let (ok, _, err) = activegen_with(args, env);
    assert!(!ok, "{args:?} succeeded; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?} printed {} lines:\n{err}",
        lines.len()
    );
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' not in: {err}");
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("activegen-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

#[test]
fn an_unknown_model_is_refused() {
    let d = scratch("model");
    refused(
        &[
            "train",
            "--model",
            "transformer",
            "--out",
            d.join("r").to_str().unwrap(),
        ],
        &["unknown model 'transformer'"],
    );
}

#[test]
fn zero_or_negative_steps_and_batch_are_refused() {
    let d = scratch("steps");
    let out = d.join("r");
    let o = out.to_str().unwrap();
    refused(&["train", "--steps", "0", "--out", o], &["--steps"]);
    refused(&["train", "--steps", "-5", "--out", o], &["--steps", "-5"]);
    refused(&["train", "--batch", "0", "--out", o], &["--batch"]);
    refused(
        &["train", "--batch", "-64", "--out", o],
        &["--batch", "-64"],
    );
    refused(&["train", "--lr", "7", "--out", o], &["--lr"]);
    refused(
        &["train", "--resolution", "30", "--out", o],
        &["resolution 30"],
    );
}

#[test]
fn a_missing_dataset_file_is_named() {
    let d = scratch("missing");
    refused(
        &[
            "train",
            "--data",
            "idx:/nonexistent/images.idx",
            "--steps",
            "1",
            "--out",
            d.join("r").to_str().unwrap(),
        ],
        &["/nonexistent/images.idx", "no such file"],
    );
}

#[test]
fn truncated_and_garbled_idx_files_are_named_with_the_problem() {
    let d = scratch("idx");
    let out = d.join("r");
    // Truncated: the header promises 100 images of 28x28, the file holds 10.
    let mut t = idx_header(0x803, &[100, 28, 28]);
    t.extend(vec![0u8; 10 * 784]);
    let trunc = d.join("trunc.idx");
    std::fs::write(&trunc, &t).unwrap();
    refused(
        &[
            "train",
            "--data",
            &format!("idx:{}", trunc.display()),
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        &["trunc.idx"],
    );
    // Garbled: not an IDX magic number.
    let garbled = d.join("garbled.idx");
    std::fs::write(&garbled, b"this is not an idx file at all, just text").unwrap();
    refused(
        &[
            "train",
            "--data",
            &format!("idx:{}", garbled.display()),
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        &["garbled.idx", "magic"],
    );
    // A header that claims billions of images must not allocate them.
    let mut huge = idx_header(0x803, &[2_000_000_000, 28, 28]);
    huge.extend(vec![0u8; 784]);
    let big = d.join("billions.idx");
    std::fs::write(&big, &huge).unwrap();
    refused(
        &[
            "train",
            "--data",
            &format!("idx:{}", big.display()),
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        &["billions.idx", "2000000000"],
    );
}

#[test]
fn resume_without_a_run_and_sample_without_a_checkpoint_are_refused() {
    let d = scratch("resume");
    refused(
        &[
            "train",
            "--resume",
            "--out",
            d.join("nothing").to_str().unwrap(),
        ],
        &["config.toml", "no such file"],
    );
    refused(
        &[
            "sample",
            "--checkpoint",
            d.join("nothing").to_str().unwrap(),
            "--grid",
            d.join("g.png").to_str().unwrap(),
        ],
        &["config.toml"],
    );
}

#[test]
fn a_checkpoint_of_the_wrong_shape_is_refused_by_sample() {
    let d = scratch("shape");
    let run = d.join("run");
    let r = run.to_str().unwrap();
    let (ok, _, err) = activegen(&[
        "train",
        "--steps",
        "2",
        "--batch",
        "8",
        "--g-width",
        "8",
        "--d-width",
        "8",
        "--z-dim",
        "8",
        "--quiet",
        "--out",
        r,
    ]);
    assert!(ok, "tiny training failed: {err}");
    // Claim other widths in the config: the weights no longer fit.
    let cfg = std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .replace("g_width = 8", "g_width = 16");
    std::fs::write(run.join("config.toml"), cfg).unwrap();
    refused(
        &[
            "sample",
            "--checkpoint",
            r,
            "--grid",
            d.join("g.png").to_str().unwrap(),
        ],
        &["generator.safetensors", "shape"],
    );
    // A garbled weights file: the run's commit record names it as changed.
    std::fs::write(run.join("generator.safetensors"), b"garbage").unwrap();
    refused(
        &[
            "sample",
            "--checkpoint",
            r,
            "--grid",
            d.join("g.png").to_str().unwrap(),
        ],
        &["generator.safetensors", "not the file", "recorded"],
    );
    // Without the record, the loader itself refuses it.
    std::fs::remove_file(run.join("state.json")).unwrap();
    refused(
        &[
            "sample",
            "--checkpoint",
            r,
            "--grid",
            d.join("g.png").to_str().unwrap(),
        ],
        &["generator.safetensors", "not a valid safetensors file"],
    );
}

/// A .npy file of float32 rows (version 1 header).
fn npy_f32(path: &std::path::Path, rows: usize, cols: usize, value: f32) {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for _ in 0..rows * cols {
        bytes.extend(value.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn sample_refuses_empty_and_non_finite_latents_and_works_in_chunks() {
    let d = scratch("latents");
    let run = d.join("run");
    let r = run.to_str().unwrap();
    let (ok, _, err) = activegen(&[
        "train",
        "--steps",
        "2",
        "--batch",
        "8",
        "--g-width",
        "8",
        "--d-width",
        "8",
        "--z-dim",
        "8",
        "--quiet",
        "--out",
        r,
    ]);
    assert!(ok, "tiny training failed: {err}");
    let grid = d.join("g.png");
    let g = grid.to_str().unwrap();
    let empty = d.join("empty.npy");
    npy_f32(&empty, 0, 8, 0.0);
    refused(
        &[
            "sample",
            "--checkpoint",
            r,
            "--latents",
            empty.to_str().unwrap(),
            "--grid",
            g,
        ],
        &["empty.npy", "no latents"],
    );
    let nan = d.join("nan.npy");
    npy_f32(&nan, 3, 8, f32::NAN);
    refused(
        &[
            "sample",
            "--checkpoint",
            r,
            "--latents",
            nan.to_str().unwrap(),
            "--grid",
            g,
        ],
        &["nan.npy", "NaN", "finite"],
    );
    // More images than one chunk (500), with a ragged last chunk.
    let dir = d.join("pngs");
    let (ok, _, err) = activegen(&[
        "sample",
        "--checkpoint",
        r,
        "--n",
        "1203",
        "--out-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1203);
    // An absurd width in the run's config is refused before anything is allocated.
    let cfg = std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .replace("g_width = 8", "g_width = 4611686018427387904");
    std::fs::write(run.join("config.toml"), cfg).unwrap();
    refused(
        &["sample", "--checkpoint", r, "--grid", g],
        &["config.toml", "g_width", "between 1 and 1024"],
    );
}

/// A tiny DCGAN trained 2 steps into `scratch(name)/run`: the run directory and the flags
/// that resume it (`--steps` and `--resume` to be added).
fn two_step_run(name: &str) -> (PathBuf, Vec<String>) {
    let run = scratch(name).join("run");
    let tiny: Vec<String> = [
        "--batch",
        "8",
        "--g-width",
        "8",
        "--d-width",
        "8",
        "--quiet",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([run.to_str().unwrap().to_string()])
    .collect();
    let args: Vec<&str> = ["train", "--steps", "2"]
        .into_iter()
        .chain(tiny.iter().map(String::as_str))
        .collect();
    let (ok, _, err) = activegen(&args);
    assert!(ok, "{err}");
    (run, tiny)
}

/// `train --steps N --resume` over the run `two_step_run` made.
fn resume_args<'a>(steps: &'a str, tiny: &'a [String]) -> Vec<&'a str> {
    ["train", "--steps", steps, "--resume"]
        .into_iter()
        .chain(tiny.iter().map(String::as_str))
        .collect()
}

#[test]
fn a_state_file_whose_data_order_does_not_fit_the_data_is_refused() {
    let (run, tiny) = two_step_run("sampler");
    common::edit_json(&run.join("state.json"), |state| {
        state["sampler"]["n"] = serde_json::json!(5)
    });
    refused(
        &resume_args("4", &tiny),
        &["state.json", "over 5 images", "8000"],
    );
}

#[test]
fn a_run_directory_refuses_other_settings_and_the_other_command() {
    let d = scratch("fingerprint");
    let run = d.join("run");
    let r = run.to_str().unwrap();
    let tiny = ["--g-width", "8", "--d-width", "8", "--quiet", "--out", r];
    let train =
        |extra: &[&'static str]| -> Vec<&str> { [&["train"][..], &tiny[..], extra].concat() };
    let (ok, _, err) = activegen(&train(&["--steps", "2", "--batch", "8"]));
    assert!(ok, "{err}");
    // A new run over it, a resume with another batch, and an active run into it: refused.
    refused(
        &train(&["--steps", "2", "--batch", "8"]),
        &[r, "already holds a run", "--resume"],
    );
    refused(
        &train(&["--steps", "4", "--batch", "16", "--resume"]),
        &[r, "batch", "8", "16", "--allow-changed-settings"],
    );
    refused(
        &["active", "--strategy", "random", "--quiet", "--out", r],
        &[r, "holds an `activegen train` run"],
    );
    // More steps are not another setting; a new learning rate is, on purpose.
    let (ok, _, err) = activegen(&train(&["--steps", "3", "--batch", "8", "--resume"]));
    assert!(ok, "{err}");
    let (ok, _, err) = activegen(&train(&[
        "--steps",
        "4",
        "--batch",
        "8",
        "--lr",
        "1e-4",
        "--resume",
        "--allow-changed-settings",
    ]));
    assert!(ok, "{err}");
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("0.0001"), "{cfg}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_unknown_device_is_refused_with_the_list() {
    refused(
        &["--device", "no-such-gpu", "bench", "matmul", "--sizes", "4"],
        &["--device no-such-gpu", "available"],
    );
}

#[test]
fn unknown_kernel_choices_in_the_environment_are_refused() {
    let args = ["bench", "matmul", "--sizes", "4"];
    refused_with(
        &args,
        &[("ACTIVEGEN_GEMM_TILE", "96x3")],
        &["ACTIVEGEN_GEMM_TILE=96x3", "64x4"],
    );
    refused_with(
        &args,
        &[("ACTIVEGEN_GEMM", "fast")],
        &["ACTIVEGEN_GEMM=fast", "tiled"],
    );
}

#[test]
fn devices_lists_at_least_one_adapter() {
    let (ok, out, err) = activegen(&["devices"]);
    assert!(ok, "devices failed: {err}");
    assert!(
        out.contains("max buffer") && out.contains("subgroups"),
        "{out}"
    );
}

/// A flat folder of PNGs (no class subfolders): the first `n` builtin training digits.
fn flat_folder(dir: &std::path::Path, n: usize) {
    let train = activegen::data::load(
        "builtin",
        activegen::data::Split::Train,
        &activegen::data::LoadOptions::default(),
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let mut px = vec![0.0f32; 784];
    for i in 0..n {
        train.fill_batch(&[i], &mut px);
        activegen::imageio::save_image_png(dir.join(format!("img{i:04}.png")), &px, 1, 28, 28)
            .unwrap();
    }
}

#[test]
fn train_active_compare_and_eval_run_on_a_flat_folder_of_unlabeled_images() {
    let d = scratch("flat");
    let images = d.join("images");
    flat_folder(&images, 150);
    let data = format!("folder:{}", images.display());
    let cache = d.join("cache");
    let env = [("ACTIVEGEN_CACHE", cache.to_str().unwrap())];
    let tiny: Vec<&str> = vec![
        "--data",
        &data,
        "--resolution",
        "28",
        "--initial",
        "30",
        "--budget",
        "20",
        "--per-round",
        "10",
        "--steps-per-round",
        "3",
        "--eval-steps",
        "4",
        "--eval-n",
        "12",
        "--g-width",
        "8",
        "--d-width",
        "8",
        "--z-dim",
        "8",
        "--batch",
        "8",
        "--ssl-steps",
        "3",
    ];
    let run = d.join("active");
    let mut args = vec![
        "active",
        "--strategy",
        "coverage-stratified",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend(&tiny);
    let (ok, out, err) = activegen_with(&args, &env);
    assert!(ok, "active on a flat folder failed: {err}");
    assert!(out.contains("n/a (needs labels)"), "{out}");
    assert!(
        out.contains("self-supervised encoder trained without labels on the pool"),
        "{out}"
    );
    assert!(
        out.contains("held-out"),
        "the judge is the held-out split's encoder: {out}"
    );
    assert_eq!(
        out.matches("FID").count(),
        3,
        "three measured rounds: {out}"
    );

    let ckpt = run.join("checkpoint");
    let (ok, out, err) = activegen_with(
        &["eval", "--checkpoint", ckpt.to_str().unwrap(), "--n", "12"],
        &env,
    );
    assert!(ok, "eval on a flat folder failed: {err}");
    assert!(
        out.contains("class coverage") && out.contains("n/a (needs labels)"),
        "{out}"
    );
    assert!(
        out.contains("self-supervised encoder") && out.contains("held-out"),
        "{out}"
    );

    let cmp = d.join("compare");
    let mut args = vec![
        "compare",
        "--strategies",
        "random,coreset",
        "--seeds",
        "1",
        "--quiet",
        "--out",
        cmp.to_str().unwrap(),
    ];
    args.extend(&tiny);
    let (ok, out, err) = activegen_with(&args, &env);
    assert!(ok, "compare on a flat folder failed: {err}");
    assert!(out.contains("coreset") && out.contains("n/a"), "{out}");
    let html = std::fs::read_to_string(cmp.join("report.html")).unwrap();
    assert!(!html.contains("class mix"), "no labels, no class mix");

    let trained = d.join("train");
    let (ok, _, err) = activegen_with(
        &[
            "train",
            "--data",
            &data,
            "--resolution",
            "28",
            "--steps",
            "2",
            "--batch",
            "8",
            "--g-width",
            "8",
            "--d-width",
            "8",
            "--quiet",
            "--out",
            trained.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "train on a flat folder failed: {err}");

    // What needs labels says so, in one line.
    let o = d.join("refused");
    for (flags, needle) in [
        (vec!["--scenario", "long-tail"], "labelled dataset"),
        (
            vec!["--acq-features", "classifier"],
            "needs a labelled dataset",
        ),
        (vec!["--conditional"], "needs a labelled dataset"),
    ] {
        let mut args = vec!["active", "--out", o.to_str().unwrap()];
        args.extend(&tiny);
        args.extend(flags.iter().copied());
        refused_with(&args, &env, &[needle]);
        let _ = std::fs::remove_dir_all(&o);
    }
    let _ = std::fs::remove_dir_all(&d);
}

// A run resumed on another adapter, driver, lavapipe width or kernel set continues, and
// says in one line that its numbers are no longer bitwise those of an uninterrupted run.
#[test]
fn a_resume_on_another_device_continues_and_says_so() {
    let (run, tiny) = two_step_run("other-device");
    let path = run.join("state.json");
    let here = common::read_json(&path)["device"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        here.contains("kernels"),
        "state.json names no device: {here}"
    );
    common::edit_json(&path, |state| {
        state["device"] = serde_json::json!("Another GPU | Vulkan | other driver")
    });
    let (ok, _, err) = activegen(&resume_args("3", &tiny));
    assert!(ok, "{err}");
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("last stepped on"))
        .collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(
        notes[0].contains("state.json")
            && notes[0].contains("Another GPU")
            && notes[0].contains("not bitwise"),
        "{err}"
    );
    // The checkpoint of step 3 records this device again: the next resume says nothing.
    let (ok, _, err) = activegen(&resume_args("4", &tiny));
    assert!(ok, "{err}");
    assert!(!err.contains("last stepped on"), "{err}");
}
