//! The web page's training loop (web/app.js), run natively on the same session code
//! (`activegen::web::Session`): one step at a time, the losses read every 10 steps, and the
//! step time as wall time between reads, read included, as the page reports it. The native
//! side of BENCHMARKS.md's browser-against-native figure.
//!
//!   cargo run --release --example page_step -- [STEPS (30)] [BATCH (64)]

use std::time::Instant;

use activegen::web::Session;
use activegen::Engine;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let steps = args.first().copied().unwrap_or(30);
    let batch = args.get(1).copied().unwrap_or(64);
    let start = Instant::now();
    let g = Engine::new(None)?;
    let mut s = Session::new(g, 1, 512, batch)?;
    let mut windows = vec![];
    let (mut last_read, mut since) = (None::<Instant>, 0);
    for step in 1..=steps {
        s.train(1)?;
        since += 1;
        if step % 10 == 0 || step == 1 {
            let losses = pollster::block_on(s.losses())?;
            let now = Instant::now();
            if step == 1 {
                println!(
                    "first step {:.0} ms after start; losses {losses:?}",
                    (now - start).as_secs_f64() * 1e3
                );
            }
            if let Some(t) = last_read {
                windows.push((now - t).as_secs_f64() * 1e3 / since as f64);
            }
            (last_read, since) = (Some(now), 0);
        }
    }
    println!(
        "{}: {steps} steps at batch {batch}: ms per step by 10-step window {windows:.1?}",
        s.adapter()
    );
    Ok(())
}
