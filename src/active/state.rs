//! The run directory of `activegen active`: active.toml (compared on resume),
//! active_state.json (each round's commit, with the checkpoint's manifest), the
//! checkpoint itself, and rounds.jsonl / rounds.csv.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use super::{ActiveConfig, DiscSnapshot, Pool, RoundRecord};
use crate::checkpoint;
use crate::engine::Engine;
use crate::train::{self, Model, TrainConfig};

/// Everything `--resume` needs, written after each round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ActiveState {
    pub(super) next_round: usize,
    pub(super) acquired: Vec<usize>,
    pub(super) records: Vec<RoundRecord>,
    pub(super) rng_seed: u64,
    pub(super) rng_offset: u64,
    pub(super) best_fid: f64,
    pub(super) evals_since_best: usize,
    /// The files of the checkpoint/ directory as written after `next_round - 1` (this
    /// state file is their commit).
    #[serde(default)]
    pub(super) checkpoint: checkpoint::Manifest,
    /// Where the run last stepped (`Engine::identity`).
    #[serde(default)]
    pub(super) device: String,
}

impl ActiveState {
    /// Round 0 of a run: the initial set acquired, nothing measured.
    pub(super) fn fresh(cfg: &ActiveConfig, pool: &Pool) -> ActiveState {
        ActiveState {
            next_round: 0,
            acquired: pool.initial.clone(),
            records: vec![],
            rng_seed: cfg.seed,
            rng_offset: 0,
            best_fid: f64::INFINITY,
            evals_since_best: 0,
            checkpoint: Default::default(),
            device: String::new(),
        }
    }
}

/// Creates the run directory, refusing another command's run or an unasked resume, and
/// writes active.toml. Whether there is a run to resume.
pub(super) fn open_run_dir(cfg: &ActiveConfig, out: &Path, resume: bool) -> Result<bool> {
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
pub(super) fn resume_state(
    g: &Engine,
    out: &Path,
    pool: &Pool,
    model: &mut Model,
    snapshots: &[DiscSnapshot],
) -> Result<ActiveState> {
    let state_path = out.join("active_state.json");
    let st: ActiveState = checkpoint::read_json(&state_path)?;
    checkpoint::note_other_device(g, &st.device, &state_path);
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

/// The round's checkpoint (model, discriminator snapshots, training settings) staged,
/// then active_state.json (its commit), then published, then rounds.jsonl.
pub(super) fn commit_round(
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
    st.device = g.identity().to_string();
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
