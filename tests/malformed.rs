//! The malformed-input corpus (tests/corpus, written by make_corpus.py): every input,
//! handed to the command that reads it, gets a failing exit and one line naming the file
//! and the problem (expected.tsv), never a panic. Then the corpus is replayed through the
//! fuzz targets and a short fixed-seed fuzz run checks the loaders (long runs:
//! `cargo run --release --example fuzz`).

mod common;

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn activegen(args: &[&str], cache: &Path) -> (bool, String) {
    let (ok, _, err) = common::run_activegen(args, &[("ACTIVEGEN_CACHE", cache.to_str().unwrap())]);
    (ok, err)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn every_malformed_input_gets_one_line_naming_it_and_the_problem() {
    let d = std::env::temp_dir().join(format!("activegen-malformed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let cache = d.join("cache");
    // A tiny trained run for the inputs that go with a checkpoint (latents, weights, state).
    let run = d.join("run");
    let run_s = run.to_str().unwrap();
    let tiny = [
        "--steps",
        "2",
        "--batch",
        "4",
        "--g-width",
        "8",
        "--d-width",
        "8",
        "--z-dim",
        "8",
        "--quiet",
    ];
    let (ok, err) = activegen(
        &[&["train", "--out", run_s][..], &tiny[..]].concat(),
        &cache,
    );
    assert!(ok, "{err}");

    let expected = std::fs::read_to_string(corpus().join("expected.tsv")).unwrap();
    let mut cases = 0;
    let mut wrong = vec![];
    for line in expected.lines().filter(|l| !l.starts_with('#')) {
        let (input, needle) = line.split_once('\t').expect("input<TAB>expected");
        let path = corpus().join(input);
        let p = path.to_str().unwrap().to_string();
        let kind = input.split('/').next().unwrap();
        let scratch = d.join(input.replace('/', "_"));
        let out = scratch.to_str().unwrap().to_string();
        let grid = scratch.join("grid.png").to_str().unwrap().to_string();
        let args: Vec<String> = match kind {
            "idx" | "gzip" => [
                &["train", "--data", &format!("idx:{p}"), "--out", &out][..],
                &tiny[..],
            ]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .collect(),
            "folder" => [
                &[
                    "train",
                    "--data",
                    &format!("folder:{p}"),
                    "--resolution",
                    "28",
                    "--out",
                    &out,
                ][..],
                &tiny[..],
            ]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .collect(),
            "config" => ["train", "--config", &p, "--out", &out, "--quiet"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "npy" => [
                "sample",
                "--checkpoint",
                run_s,
                "--latents",
                &p,
                "--grid",
                &grid,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            "safetensors" => {
                copy_dir(&run, &scratch);
                std::fs::copy(&path, scratch.join("generator.safetensors")).unwrap();
                // Without the run's commit record, so that the file reaches the loader
                // (with it, `sample` refuses the changed file before reading it).
                std::fs::remove_file(scratch.join("state.json")).unwrap();
                ["sample", "--checkpoint", &out, "--grid", &grid]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }
            "state" => {
                copy_dir(&run, &scratch);
                std::fs::copy(&path, scratch.join("state.json")).unwrap();
                ["train", "--resume", "--out", &out, "--quiet"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }
            other => panic!("{input}: unknown kind {other}"),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, err) = activegen(&args, &cache);
        let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
        // The file is named (or, for the replaced checkpoint files, its directory's copy).
        let named = match kind {
            "safetensors" => "generator.safetensors".to_string(),
            "state" => "state.json".to_string(),
            "folder" if needle.starts_with("no ") => input.rsplit('/').next().unwrap().to_string(),
            "folder" => needle.to_string(),
            _ => path.file_name().unwrap().to_string_lossy().to_string(),
        };
        if ok
            || err.contains("panicked")
            || lines != 1
            || !err.contains(needle)
            || !err.contains(&named)
        {
            wrong.push(format!(
                "{input}: exit {}, {lines} lines, expected '{needle}' naming {named}: {}",
                if ok { "0" } else { "≠0" },
                err.trim()
            ));
        }
        cases += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} of {cases} cases:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(cases >= 50, "only {cases} cases in expected.tsv");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_corpus_replays_through_the_fuzz_targets_and_a_short_fuzz_run_finds_nothing() {
    for target in activegen::fuzz::TARGETS {
        let mut seeds = vec![];
        for dir in activegen::fuzz::seed_dirs(target) {
            seeds.extend(activegen::fuzz::read_seeds(&corpus().join(dir)).unwrap());
        }
        assert!(seeds.len() >= 4, "{target}: {} seeds", seeds.len());
        // The valid seeds load; the malformed ones are refused (replayed first by `fuzz`).
        let r = activegen::fuzz::fuzz(target, &seeds, 20_000, 7).unwrap();
        assert!(
            r.loaded > 0,
            "{target}: nothing loaded, so the fuzzer never got past the checks"
        );
        assert!(r.refused > 0, "{target}: nothing refused");
        assert!(
            r.failures.is_empty(),
            "{target}: {} failures, first: {} on {:?}",
            r.failures.len(),
            r.failures[0].1,
            &r.failures[0].0[..r.failures[0].0.len().min(64)]
        );
    }
}
