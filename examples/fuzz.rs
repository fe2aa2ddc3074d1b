//! Long fuzz runs of the file loaders (src/fuzz.rs), seeded from tests/corpus:
//!     cargo run --release --example fuzz -- [TARGET|all] [EXECUTIONS=1000000] [SEED=1]
//! Prints each target's tally; inputs that panicked or gave a multi-line error are saved
//! under fuzz-failures/ and the exit status is 1.

use activegen::fuzz;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let executions: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let targets: Vec<&str> = if which == "all" {
        fuzz::TARGETS.to_vec()
    } else {
        vec![which]
    };
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut failed = false;
    for t in targets {
        let mut seeds = vec![];
        for d in fuzz::seed_dirs(t) {
            seeds.extend(fuzz::read_seeds(&corpus.join(d)).unwrap_or_else(|e| panic!("{e}")));
        }
        let start = std::time::Instant::now();
        let r = match fuzz::fuzz(t, &seeds, executions, seed) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("fuzz: {e}");
                std::process::exit(2);
            }
        };
        println!(
            "{t:12} {:>9} executions in {:>6.1} s: {} loaded, {} refused ({} kinds of error, corpus grew to {}), {} failures",
            r.executions,
            start.elapsed().as_secs_f64(),
            r.loaded,
            r.refused,
            r.distinct_errors,
            r.corpus_size,
            r.failures.len()
        );
        for (i, (input, what)) in r.failures.iter().enumerate().take(20) {
            let dir = std::path::Path::new("fuzz-failures").join(t);
            std::fs::create_dir_all(&dir).ok();
            std::fs::write(dir.join(format!("{i}.bin")), input).ok();
            println!("  {t} failure {i}: {}", what.lines().next().unwrap_or(""));
        }
        failed |= !r.failures.is_empty();
    }
    std::process::exit(i32::from(failed));
}
