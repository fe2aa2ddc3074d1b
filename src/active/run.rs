//! `activegen active`: the rounds of one strategy's run — acquire, train the acquisition
//! model, measure, write the round's outputs, commit — with the run directory's state,
//! written after every round so that `--resume` continues exactly where it stopped.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, Result};

use super::setup::{new_snapshots, save_grid, train_on, Setup};
use super::state::{commit_round, open_run_dir, resume_state, ActiveState};
use super::strategy::{self, Strategy};
use super::{
    registry, ActiveConfig, ActiveOutcome, DiscSnapshot, Pool, Protocol, RoundRecord, Space,
};
use crate::checkpoint;
use crate::engine::nn;
use crate::engine::Engine;
use crate::metrics::Features;
use crate::train::{self, Model, TrainConfig};
use crate::util::HostRng;

/// networks.json: which network judges and which one the strategy chooses with.
fn write_networks(
    out: &Path,
    setup: &Setup,
    space: Option<&Space>,
    acquisition: &str,
) -> Result<()> {
    let pool = &setup.pool;
    checkpoint::write_json(
        &out.join("networks.json"),
        &serde_json::json!({
            "judge": setup.judge.description,
            "acquisition": acquisition,
            "acquisition_uses_labels": space.is_some_and(|s| s.kind.uses_labels()),
            "pool_unseen": pool.unseen.len(),
            "pool_class_histogram": pool.histogram(&pool.unseen),
            "class_names": pool.data.class_names,
        }),
    )
}

fn announce(cfg: &ActiveConfig, pool: &Pool) {
    eprintln!(
        "activegen: active learning with {} on {}: {} initial + {} budget in rounds of {}; pool of {} images; {} protocol",
        cfg.strategy,
        cfg.train.data,
        pool.initial.len(),
        cfg.budget,
        cfg.per_round,
        pool.unseen.len(),
        match cfg.protocol {
            Protocol::Warm => format!("warm ({} steps per round, measured as it goes)", cfg.steps_per_round),
            Protocol::Retrain => format!("retrain (a fresh model, {} steps, at each evaluated budget)", cfg.eval_steps),
        }
    );
}

/// What one round's acquisition reads.
struct Acquirer<'a> {
    cfg: &'a ActiveConfig,
    pool: &'a Pool,
    strat: &'a mut Box<dyn Strategy>,
    space: Option<&'a mut Space>,
    snapshots: &'a [DiscSnapshot],
}

impl Acquirer<'_> {
    /// Scores the unseen images not yet acquired (a seeded subsample of them, with
    /// `pool_subsample`) and appends the strategy's choice to `acquired`; the images
    /// bought, or None when nothing is left to buy. The device's random stream is left as
    /// it was.
    fn acquire(
        &mut self,
        g: &Engine,
        model: &Model,
        acquired: &mut Vec<usize>,
        round: usize,
        rng: &mut HostRng,
    ) -> Result<Option<Vec<usize>>> {
        let (cfg, pool) = (self.cfg, self.pool);
        let spent_before = acquired.len() - pool.initial.len();
        let in_set: HashSet<usize> = acquired.iter().copied().collect();
        let mut candidates: Vec<usize> = pool
            .unseen
            .iter()
            .copied()
            .filter(|i| !in_set.contains(i))
            .collect();
        if cfg.pool_subsample > 0 && candidates.len() > cfg.pool_subsample {
            rng.shuffle(&mut candidates);
            candidates.truncate(cfg.pool_subsample);
            candidates.sort_unstable();
        }
        let k = cfg
            .per_round
            .min(cfg.budget - spent_before)
            .min(candidates.len());
        if k == 0 {
            return Ok(None);
        }
        let chosen = g.keeping_rng(|| self.select(g, model, acquired, &candidates, k, round, rng));
        let mut seen = in_set;
        let mut new_items = vec![];
        for c in chosen? {
            if !seen.contains(&c) && candidates.binary_search(&c).is_ok() {
                seen.insert(c);
                acquired.push(c);
                new_items.push(c);
            }
        }
        Ok(Some(new_items))
    }

    #[allow(clippy::too_many_arguments)]
    fn select(
        &mut self,
        g: &Engine,
        model: &Model,
        acquired: &[usize],
        candidates: &[usize],
        k: usize,
        round: usize,
        rng: &mut HostRng,
    ) -> Result<Vec<usize>> {
        let (cfg, pool) = (self.cfg, self.pool);
        let empty = Features::new(0, 0, vec![])?;
        let generated = match self.space.as_deref_mut() {
            Some(sp) => {
                sp.refresh(g, model, pool)?;
                sp.generated(g, model, cfg.eval_n, cfg.seed ^ 0x6e)?
            }
            None => empty.clone(),
        };
        let space = self.space.as_deref();
        let (features, strata) = match space {
            Some(sp) => (&sp.pool, &sp.strata[..]),
            None => (&empty, &[][..]),
        };
        let mut ctx = strategy::Context {
            g,
            model,
            pool,
            acquired,
            candidates,
            features,
            strata,
            generated: &generated,
            disc_snapshots: self.snapshots,
            rng,
            round,
            hybrid_beta: cfg.hybrid_beta,
            space,
            synthesis: &cfg.synthesis,
        };
        self.strat.select(&mut ctx, k)
    }
}

/// Trains the acquisition model on the acquired set (afresh unless `warm_start`), keeping
/// discriminator snapshots at 1/3, 2/3 and the end of the round's steps; its last losses.
#[allow(clippy::too_many_arguments)]
fn train_round(
    g: &Engine,
    cfg: &ActiveConfig,
    setup: &Setup,
    model: &mut Model,
    acquired: &[usize],
    snapshots: &[DiscSnapshot],
    round: usize,
) -> Result<Vec<(String, f32)>> {
    if !cfg.warm_start && round > 0 {
        *model = Model::new(g, &setup.tcfg, setup.classes)?;
    }
    let acquired_ds = setup.pool.data.subset(acquired);
    let steps = cfg.steps_per_round;
    train_on(
        g,
        &setup.tcfg,
        setup.classes,
        model,
        &acquired_ds,
        steps,
        cfg.seed ^ (round as u64).wrapping_mul(0x9e37),
        |step, model| {
            if let Model::Gan(m) = model {
                for (j, snap) in snapshots.iter().enumerate() {
                    if step + 1 == steps * (j + 1) / snapshots.len() {
                        nn::copy_state(g, &snap.disc, &m.disc)?;
                    }
                }
            }
            Ok(())
        },
    )
    .map_err(|e| anyhow!("round {round}: {e}"))
}

type Measured = (Option<super::Quality>, Vec<(String, f32)>);

/// Quality at this budget where it is evaluated: the acquisition model's (warm) or a fresh
/// model's (retrain), with the round's sample grid.
#[allow(clippy::too_many_arguments)]
fn measure_round(
    g: &Engine,
    cfg: &ActiveConfig,
    setup: &Setup,
    model: &Model,
    acquired: &[usize],
    spent: usize,
    grid: &Path,
    round: usize,
    progress: bool,
) -> Result<Measured> {
    if !cfg.evaluates(spent) {
        return Ok((None, vec![]));
    }
    match cfg.protocol {
        Protocol::Warm => {
            let (q, images) = setup.measure(g, cfg, model)?;
            save_grid(grid, &images, &setup.tcfg)?;
            Ok((Some(q), vec![]))
        }
        Protocol::Retrain => {
            let (q, l) = setup
                .retrain(g, cfg, acquired, grid, progress)
                .map_err(|e| anyhow!("round {round}, retrain: {e}"))?;
            Ok((Some(q), l))
        }
    }
}

/// A grid of pool images, as the model's images are shown.
fn save_pool_grid(path: &Path, pool: &Pool, items: &[usize], tcfg: &TrainConfig) -> Result<()> {
    let ds = pool.data.subset(items);
    let mut pixels = vec![0.0f32; items.len() * ds.image_len()];
    ds.fill_batch(&(0..items.len()).collect::<Vec<_>>(), &mut pixels);
    save_grid(path, &pixels, tcfg)
}

/// The round's grids (bought images; synthesis's queries and what answered them) and
/// rounds/round_NN.json.
fn write_round_outputs(
    out: &Path,
    pool: &Pool,
    st: &ActiveState,
    bought: &[usize],
    strat: &dyn Strategy,
    tcfg: &TrainConfig,
    rec: &RoundRecord,
) -> Result<()> {
    let round = rec.round;
    let shown: Vec<usize> = bought.iter().copied().take(64).collect();
    save_pool_grid(
        &out.join(format!("rounds/acquired_{round:02}.png")),
        pool,
        &shown,
        tcfg,
    )?;
    // Synthesis: what the generator asked for and the pool images that answered.
    let mut retrieved = vec![];
    if let Some(q) = strat.last_queries().filter(|_| round > 0) {
        save_grid(
            &out.join(format!("rounds/queries_{round:02}.png")),
            &q.images,
            tcfg,
        )?;
        let path = out.join(format!("rounds/retrieved_{round:02}.png"));
        save_pool_grid(&path, pool, &q.retrieved, tcfg)?;
        retrieved = q.retrieved.clone();
    }
    checkpoint::write_json(
        &out.join(format!("rounds/round_{round:02}.json")),
        &serde_json::json!({
            "round": round,
            "acquired": &st.acquired,
            "new": bought,
            "new_class_histogram": pool.histogram(bought),
            "sources": st.acquired.iter().map(|&i| pool.items[i].source).collect::<Vec<_>>(),
            "class_histogram": &rec.acquired_histogram,
            "queries_retrieved": retrieved,
        }),
    )
}

/// Whether the run stops after this round: target FID reached, FID not improving for
/// `patience` evaluations, or nothing bought.
fn stops_after(cfg: &ActiveConfig, st: &ActiveState, rec: &RoundRecord, progress: bool) -> bool {
    let fid = rec.quality.as_ref().map(|q| q.fid);
    if let (Some(t), Some(f)) = (cfg.target_fid, fid) {
        if f <= t {
            if progress {
                eprintln!(
                    "activegen: target FID reached at round {} ({f:.3})",
                    rec.round
                );
            }
            return true;
        }
    }
    if cfg.patience.is_some_and(|p| st.evals_since_best >= p) {
        if progress {
            eprintln!(
                "activegen: FID has not improved for {} evaluations; stopping",
                st.evals_since_best
            );
        }
        return true;
    }
    rec.round > 0 && rec.new == 0
}

/// The record of a finished round.
fn round_record(
    pool: &Pool,
    acquired: &[usize],
    round: usize,
    new: usize,
    (quality, eval_losses): Measured,
    losses: Vec<(String, f32)>,
    started: std::time::Instant,
) -> RoundRecord {
    let distinct: HashSet<usize> = acquired.iter().map(|&i| pool.items[i].source).collect();
    RoundRecord {
        round,
        acquired: acquired.len(),
        new,
        quality,
        acquired_histogram: pool.histogram(acquired),
        distinct_sources: distinct.len(),
        losses,
        eval_losses,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The space the strategy chooses in (built without moving the device's random stream),
/// or None for strategies that read no features; and its description.
fn acquisition_space(
    g: &Engine,
    cfg: &ActiveConfig,
    pool: &Pool,
    model: &Model,
    uses_features: bool,
    progress: bool,
) -> Result<(Option<Space>, String)> {
    if !uses_features {
        return Ok((None, format!("none: {} reads no features", cfg.strategy)));
    }
    let space = g.keeping_rng(|| Space::build(g, cfg, pool, model, progress))?;
    let description = space.description.clone();
    Ok((Some(space), description))
}

/// `activegen active`: runs (or resumes) one strategy into `out`.
pub fn run_active(
    g: &Engine,
    cfg: &ActiveConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<ActiveOutcome> {
    cfg.validate()?;
    let resuming = open_run_dir(cfg, out, resume)?;
    let setup = Setup::new(g, cfg, progress)?;
    let pool = &setup.pool;
    let mut strat = registry::by_name(&cfg.strategy)?;
    // The acquisition model is trained between rounds only where something looks at it.
    let trains = cfg.protocol == Protocol::Warm || strat.uses_model();
    let tcfg = &setup.tcfg;
    g.set_seed(cfg.seed);
    let mut model = Model::new(g, tcfg, setup.classes)?;
    // Discriminator snapshots at 1/3, 2/3 and the end of each round's training (GAN).
    let snapshots = new_snapshots(g, &model)?;
    let mut st = if resuming {
        resume_state(g, out, pool, &mut model, &snapshots)?
    } else {
        ActiveState::fresh(cfg, pool)
    };
    let (mut space, acquisition) =
        acquisition_space(g, cfg, pool, &model, strat.uses_features(), progress)?;
    write_networks(out, &setup, space.as_ref(), &acquisition)?;
    g.set_rng_state((st.rng_seed, st.rng_offset));
    let rounds = cfg.rounds();
    if progress {
        announce(cfg, pool);
    }
    let bar = train::progress_bar(progress, rounds as u64, st.next_round as u64);
    while st.next_round < rounds {
        let round = st.next_round;
        let t = std::time::Instant::now();
        let mut rng = HostRng::new(cfg.seed, 0xac71 + round as u64);
        let mut new_items = vec![];
        if round > 0 {
            let mut acquirer = Acquirer {
                cfg,
                pool,
                strat: &mut strat,
                space: space.as_mut(),
                snapshots: &snapshots,
            };
            match acquirer.acquire(g, &model, &mut st.acquired, round, &mut rng)? {
                Some(bought) => new_items = bought,
                None => break,
            }
        }
        let spent = st.acquired.len() - pool.initial.len();
        let losses = if trains {
            train_round(g, cfg, &setup, &mut model, &st.acquired, &snapshots, round)?
        } else {
            vec![]
        };
        let grid = out.join(format!("rounds/round_{round:02}.png"));
        let (quality, eval_losses) = measure_round(
            g,
            cfg,
            &setup,
            &model,
            &st.acquired,
            spent,
            &grid,
            round,
            progress,
        )?;
        let measured = (quality, eval_losses);
        let rec = round_record(
            pool,
            &st.acquired,
            round,
            new_items.len(),
            measured,
            losses,
            t,
        );
        // Round outputs, then the checkpoint, then the state that makes them count.
        let bought: &[usize] = if round == 0 {
            &pool.initial
        } else {
            &new_items
        };
        write_round_outputs(out, pool, &st, bought, strat.as_ref(), tcfg, &rec)?;
        commit_round(g, out, &mut st, rec.clone(), &model, &snapshots, tcfg)?;
        bar.set_position(st.next_round as u64);
        if let Some(q) = &rec.quality {
            let what = format!("{} images, FID {:.2}", rec.acquired, q.fid);
            bar.set_message(format!("round {round}: {what}, coverage {:.3}", q.coverage));
        }
        if stops_after(cfg, &st, &rec, progress) {
            break;
        }
    }
    bar.finish();
    Ok(ActiveOutcome {
        records: st.records,
        out: out.to_path_buf(),
        judge: setup.judge.description.clone(),
        acquisition,
    })
}
