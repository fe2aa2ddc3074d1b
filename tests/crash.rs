//! Crash tests: a run stopped dead (`ACTIVEGEN_FAULT` aborts the process at a named point,
//! as `kill -9` would: no destructors, nothing flushed) and then resumed ends exactly like
//! an uninterrupted run. The points are the three windows of a checkpoint write (files
//! staged, state committed, files published) and the gap between active-learning rounds.
//! `scripts/kill_test.sh` does the same with real `kill -9`s at random times.

mod common;

use std::path::{Path, PathBuf};

fn activegen(args: &[&str], cache: &Path, fault: Option<&str>) -> (bool, String) {
    let cache = cache.to_str().unwrap();
    let mut env = vec![("ACTIVEGEN_CACHE", cache)];
    env.extend(fault.map(|f| ("ACTIVEGEN_FAULT", f)));
    let (ok, _, err) = common::run_activegen(args, &env);
    (ok, err)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("activegen-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `args` into `out` with the fault, checks that it really stopped there, resumes it.
fn crash_then_resume(args: &[&str], out: &Path, cache: &Path, fault: &str) {
    let o = out.to_str().unwrap();
    let (ok, err) = activegen(&[args, &["--out", o]].concat(), cache, Some(fault));
    assert!(
        !ok && err.contains("ACTIVEGEN_FAULT"),
        "{fault}: the run did not stop at the fault point: {err}"
    );
    let (ok, err) = activegen(&[args, &["--out", o, "--resume"]].concat(), cache, None);
    assert!(ok, "{fault}: resume failed: {err}");
}

#[test]
fn a_training_run_killed_inside_a_checkpoint_write_resumes_to_the_same_weights() {
    let d = scratch("train");
    let cache = d.join("cache");
    let common = [
        "train",
        "--steps",
        "30",
        "--checkpoint-every",
        "10",
        "--batch",
        "8",
        "--g-width",
        "8",
        "--d-width",
        "8",
        "--quiet",
    ];
    // GAN: 4 files a checkpoint (G, D, G's EMA, optimizer); VAE: 2 (VAE, optimizer).
    for (model, files, faults) in [
        (
            "gan",
            &["generator", "discriminator", "generator_ema", "optimizer"][..],
            &[
                "checkpoint-staging:1",
                "checkpoint-staging:6",
                "checkpoint-publish:2",
                "checkpoint-publish:8",
            ][..],
        ),
        (
            "vae",
            &["vae", "optimizer"][..],
            &["checkpoint-staging:3", "checkpoint-publish:3"][..],
        ),
    ] {
        let args = [&common[..], &["--model", model]].concat();
        let straight = d.join(format!("{model}-straight"));
        let (ok, err) = activegen(
            &[&args[..], &["--out", straight.to_str().unwrap()]].concat(),
            &cache,
            None,
        );
        assert!(ok, "{err}");
        for fault in faults {
            let out = d.join(format!("{model}-{}", fault.replace(':', "-")));
            crash_then_resume(&args, &out, &cache, fault);
            for f in files {
                let name = format!("{f}.safetensors");
                assert_eq!(
                    std::fs::read(straight.join(&name)).unwrap(),
                    std::fs::read(out.join(&name)).unwrap(),
                    "{model}, stopped at {fault}: {name} differs from the uninterrupted run's"
                );
            }
            let left: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".staged") || n.contains(".tmp"))
                .collect();
            assert!(left.is_empty(), "{model}, {fault}: left behind {left:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// rounds.jsonl without the wall-clock `seconds` of each round.
fn rounds(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("rounds.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

fn acquired(dir: &Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rounds/round_02.json")).unwrap())
            .unwrap();
    v["acquired"].clone()
}

#[test]
fn an_active_run_killed_between_rounds_or_inside_a_checkpoint_resumes_exactly_for_every_strategy() {
    let d = scratch("active");
    let cache = d.join("cache");
    let tiny = [
        "active",
        "--initial",
        "40",
        "--budget",
        "40",
        "--per-round",
        "20",
        "--steps-per-round",
        "3",
        "--eval-steps",
        "4",
        "--eval-n",
        "20",
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
        "--pool-subsample",
        "300",
        "--synthesis-candidates",
        "24",
        "--synthesis-steps",
        "2",
        "--quiet",
    ];
    for s in activegen::active::registry::names() {
        let vae = s == "vae-elbo";
        let mut args = [&tiny[..], &["--strategy", s]].concat();
        if vae {
            args.extend(["--model", "vae"]);
        }
        let straight = d.join(format!("{s}-straight"));
        let (ok, err) = activegen(
            &[&args[..], &["--out", straight.to_str().unwrap()]].concat(),
            &cache,
            None,
        );
        assert!(ok, "{s}: {err}");
        // Inside round 1's checkpoint: past round 0's files (4 staged and 8 published
        // for the GAN with its 3 discriminator snapshots and config; 2 and 3 for the VAE).
        let faults: [&str; 3] = if vae {
            [
                "active-round-committed:1",
                "checkpoint-staging:3",
                "checkpoint-publish:5",
            ]
        } else {
            [
                "active-round-committed:1",
                "checkpoint-staging:6",
                "checkpoint-publish:10",
            ]
        };
        for fault in faults {
            let out = d.join(format!("{s}-{}", fault.replace(':', "-")));
            crash_then_resume(&args, &out, &cache, fault);
            assert_eq!(
                rounds(&straight),
                rounds(&out),
                "{s}, stopped at {fault}: rounds.jsonl differs from the uninterrupted run's"
            );
            assert_eq!(
                acquired(&straight),
                acquired(&out),
                "{s}, stopped at {fault}: another acquired set"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}
