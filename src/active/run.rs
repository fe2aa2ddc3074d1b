//! `activegen active`: the rounds of one strategy's run — acquire, train the acquisition
//! model, measure, write the round's outputs, commit — with the run directory's state,
//! written after every round so that `--resume` continues exactly where it stopped.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use super::setup::{new_snapshots, save_grid, train_on, Setup};
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

/// Everything `--resume` needs, written after each round.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ActiveState {
    next_round: usize,
    acquired: Vec<usize>,
    records: Vec<RoundRecord>,
    rng_seed: u64,
    rng_offset: u64,
    best_fid: f64,
    evals_since_best: usize,
    /// The files of the checkpoint/ directory as written after `next_round - 1` (this
    /// state file is their commit).
    #[serde(default)]
    checkpoint: checkpoint::Manifest,
}

impl ActiveState {
    /// Round 0 of a run: the initial set acquired, nothing measured.
    fn fresh(cfg: &ActiveConfig, pool: &Pool) -> ActiveState {
        ActiveState {
            next_round: 0,
            acquired: pool.initial.clone(),
            records: vec![],
            rng_seed: cfg.seed,
            rng_offset: 0,
            best_fid: f64::INFINITY,
            evals_since_best: 0,
            checkpoint: Default::default(),
        }
    }
}

/// Creates the run directory, refusing another command's run or an unasked resume, and
/// writes active.toml. Whether there is a run to resume.
fn open_run_dir(cfg: &ActiveConfig, out: &Path, resume: bool) -> Result<bool> {
    std::fs::create_dir_all(out.join("rounds"))
        .map_err(|e| anyhow!("{}: cannot create run directory: {e}", out.display()))?;
    checkpoint::remove_stale_temporaries(out);
    let state_path = out.join("active_state.json");
    let cfg_path = out.join("active.toml");
    if out.join("state.json").exists() || out.join("config.toml").exists() {
        bail!(
            "{} holds an `activegen train` run; `active` writes its own run directory: choose another --out",
            out.display()
        );
    }
    if !resume && state_path.exists() {
        bail!(
            "{} already holds an active-learning run; pass --resume or choose another --out",
            out.display()
        );
    }
    let text = toml::to_string_pretty(cfg)?;
    if resume && state_path.exists() && !cfg.allow_changed_settings {
        check_same_settings(&cfg_path, &text)?;
    }
    crate::util::write_atomic(&cfg_path, text.as_bytes())?;
    Ok(resume && state_path.exists())
}

/// The state of the last committed round, checked against this pool, with the model and
/// the discriminator snapshots restored from its checkpoint.
fn resume_state(
    g: &Engine,
    out: &Path,
    pool: &Pool,
    model: &mut Model,
    snapshots: &[DiscSnapshot],
) -> Result<ActiveState> {
    let state_path = out.join("active_state.json");
    let st: ActiveState = checkpoint::read_json(&state_path)?;
    // Checked against this pool before anything indexes it.
    let n = pool.items.len();
    let mut seen = HashSet::new();
    if let Some(&bad) = st.acquired.iter().find(|&&i| i >= n || !seen.insert(i)) {
        bail!(
            "{}: acquired image {bad} is {} of the pool's {n}; resume with the run's own data and scenario",
            state_path.display(),
            if bad >= n { "outside" } else { "listed twice in" }
        );
    }
    if st.records.len() != st.next_round {
        bail!(
            "{}: {} round records for {} finished rounds; the file is damaged",
            state_path.display(),
            st.records.len(),
            st.next_round
        );
    }
    let what = format!("round {}", st.next_round.max(1) - 1);
    st.checkpoint.roll_forward(&out.join("checkpoint"))?;
    st.checkpoint.verify(&out.join("checkpoint"), &what)?;
    model.load(g, &out.join("checkpoint"))?;
    for (j, s) in snapshots.iter().enumerate() {
        checkpoint::load_module(
            g,
            &s.disc,
            &out.join(format!("checkpoint/disc_snapshot_{j}.safetensors")),
        )?;
    }
    Ok(st)
}

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

/// The round's checkpoint (model, discriminator snapshots, training settings) staged,
/// then active_state.json (its commit), then published, then rounds.jsonl.
fn commit_round(
    g: &Engine,
    out: &Path,
    st: &mut ActiveState,
    rec: RoundRecord,
    model: &Model,
    snapshots: &[DiscSnapshot],
    tcfg: &TrainConfig,
) -> Result<()> {
    let round = rec.round;
    let ckpt = out.join("checkpoint");
    std::fs::create_dir_all(&ckpt)?;
    checkpoint::remove_stale_temporaries(&ckpt);
    let mut files = model.save(g, &ckpt).map_err(|e| {
        anyhow!(
            "round {round}: {e:#}; the previous round's checkpoint in {} is untouched",
            ckpt.display()
        )
    })?;
    for (j, snap) in snapshots.iter().enumerate() {
        let name = format!("disc_snapshot_{j}.safetensors");
        checkpoint::save_module(g, &snap.disc, &checkpoint::staged(&ckpt.join(&name)), None)?;
        files.push(name);
    }
    train::save_config(tcfg, &checkpoint::staged(&ckpt.join("config.toml")))?;
    files.push("config.toml".to_string());
    st.checkpoint = checkpoint::Manifest::of_staged(&ckpt, &files)?;
    if let Some(q) = &rec.quality {
        if q.fid < st.best_fid {
            st.best_fid = q.fid;
            st.evals_since_best = 0;
        } else {
            st.evals_since_best += 1;
        }
    }
    st.records.push(rec);
    st.next_round = round + 1;
    let (seed, offset) = g.rng_state();
    st.rng_seed = seed;
    st.rng_offset = offset;
    // The state file is the round's commit (`checkpoint::Manifest`).
    checkpoint::write_json(&out.join("active_state.json"), &*st)?;
    st.checkpoint.publish(&ckpt)?;
    crate::util::fault_point("active-round-committed");
    write_rounds(out, &st.records)
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
    let mut space = if strat.uses_features() {
        Some(g.keeping_rng(|| Space::build(g, cfg, pool, &model, progress))?)
    } else {
        None
    };
    let acquisition = match &space {
        Some(s) => s.description.clone(),
        None => format!("none: {} reads no features", cfg.strategy),
    };
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
        let distinct: HashSet<usize> = st.acquired.iter().map(|&i| pool.items[i].source).collect();
        let rec = RoundRecord {
            round,
            acquired: st.acquired.len(),
            new: new_items.len(),
            quality,
            acquired_histogram: pool.histogram(&st.acquired),
            distinct_sources: distinct.len(),
            losses,
            eval_losses,
            seconds: t.elapsed().as_secs_f64(),
        };
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
            bar.set_message(format!(
                "round {round}: {} images, FID {:.2}, coverage {:.3}",
                rec.acquired, q.fid, q.coverage
            ));
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

/// Refuses to resume a run with settings other than its own, naming the first that differs.
fn check_same_settings(path: &Path, new_text: &str) -> Result<()> {
    let Ok(old_text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    // Settings added since the run started take their defaults, as the run did.
    let old_cfg: ActiveConfig = toml::from_str(&old_text)
        .map_err(|e| anyhow!("{}: invalid settings: {}", path.display(), e.message()))?;
    let old_text = toml::to_string_pretty(&old_cfg)?;
    if old_text == new_text {
        return Ok(());
    }
    let old: toml::Value = toml::from_str(&old_text)?;
    let new: toml::Value = toml::from_str(new_text)?;
    let differs = crate::util::first_difference(&old, &new, "").unwrap_or_default();
    bail!(
        "{} holds a run started with other settings ({differs}); rerun with the same settings, add --allow-changed-settings to `active --resume` to continue with the new ones, or choose another --out",
        path.display()
    )
}

/// rounds.jsonl (one line per round) and rounds.csv, rewritten whole and atomically.
/// Unmeasured budgets and metrics that need labels are empty cells.
fn write_rounds(out: &Path, records: &[RoundRecord]) -> Result<()> {
    let mut jsonl = String::new();
    let mut csv = String::from("round,acquired,new,fid,kid,precision,recall,density,coverage,class_coverage,class_kl,distinct_sources,seconds\n");
    for r in records {
        jsonl += &serde_json::to_string(r)?;
        jsonl.push('\n');
        let cell = |m: &str| {
            r.quality
                .as_ref()
                .and_then(|q| q.get(m))
                .map_or(String::new(), |v| format!("{v:.6}"))
        };
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.2}\n",
            r.round,
            r.acquired,
            r.new,
            cell("fid"),
            cell("kid"),
            cell("precision"),
            cell("recall"),
            cell("density"),
            cell("coverage"),
            cell("class_coverage"),
            cell("class_kl"),
            r.distinct_sources,
            r.seconds
        );
    }
    crate::util::write_atomic(&out.join("rounds.jsonl"), jsonl.as_bytes())?;
    crate::util::write_atomic(&out.join("rounds.csv"), csv.as_bytes())
}
