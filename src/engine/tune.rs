//! The autotuner: kernel choices measured per device instead of fixed from one machine's
//! sweeps. A GEMM whose plan has several equivalent forms (`GemmPlan::select` gives the
//! heuristic one), or a convolution that can run as implicit GEMMs or around a column
//! matrix (`conv_implicit::wins`), is timed in each form the first time its shape is seen, runs interleaved
//! (these machines swing ±30%), and the fastest median wins. The choices are kept in the
//! cache directory, one file per adapter, driver and kernel set, so later runs start from
//! them.
//!
//! Only forms that sum in the same order compete — texture or buffer reads, the grid's
//! walk order, the tiled GEMM's tile, implicit or column convolutions — so a tuned run gives bitwise the same numbers as an
//! untuned one (tests/tune.rs checks it).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// When choices are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneMode {
    /// The built-in heuristics (`--no-tune`, and the library's default).
    Off,
    /// Cached choices where there are some, the heuristics elsewhere; nothing is timed.
    Cached,
    /// Cached choices, and a shape seen for the first time is timed and its choice kept.
    Tune,
}

/// The measured choice for one GEMM shape or convolution geometry. Fields a family does
/// not have stay at their defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Subgroup family: read A and B from texture copies.
    pub texture: bool,
    /// Subgroup family: walk row blocks first.
    pub rows_fastest: bool,
    /// Tiled family: the 128x128 tile with 8x8 outputs per invocation.
    pub wide_tile: bool,
    /// Stride-2 4x4 convolutions: im2col and GEMMs instead of the implicit GEMMs.
    #[serde(default)]
    pub columns: bool,
    /// The winner's median time, ms (for `activegen tune`'s table).
    pub ms: f64,
}

/// What the cache file holds.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    adapter: String,
    choices: BTreeMap<String, Choice>,
}

const CACHE_VERSION: u32 = 1;

pub struct Tuner {
    mode: Cell<TuneMode>,
    /// The cache file (None: choices live only in this process).
    path: RefCell<Option<PathBuf>>,
    /// The adapter, driver and kernel-set description written into the file.
    adapter: String,
    choices: RefCell<BTreeMap<String, Choice>>,
    /// Whether `path` has been read (it is read at the first lookup, not at start).
    loaded: Cell<bool>,
    /// Decisions already made in this process, by a hash of the call's shape: a training
    /// step asks the same questions every step, and answering them must not cost it a
    /// key string and a map search per product.
    memo: RefCell<HashMap<u64, Option<Choice>>>,
    /// Shapes timed by this process (tests, and `activegen tune`'s report).
    pub tuned: Cell<u64>,
    /// Lookups answered from the cache.
    pub hits: Cell<u64>,
}

impl Tuner {
    /// A tuner for this adapter, keeping its choices in `cache_dir/tuning/` (None: in
    /// memory only). Starts `Off`.
    pub fn new(info: &wgpu::AdapterInfo, cache_dir: Option<&Path>) -> Tuner {
        let adapter = format!(
            "{} | {:?} | {} {} | lavapipe width {} | kernels {:016x}",
            info.name,
            info.backend,
            info.driver,
            info.driver_info,
            std::env::var("LP_NATIVE_VECTOR_WIDTH").unwrap_or_default(),
            kernels_digest()
        );
        let file: String = format!("{:016x}.json", fnv1a(adapter.as_bytes()));
        Tuner {
            mode: Cell::new(TuneMode::Off),
            path: RefCell::new(cache_dir.map(|d| d.join("tuning").join(file))),
            adapter,
            choices: RefCell::new(BTreeMap::new()),
            loaded: Cell::new(false),
            memo: RefCell::new(HashMap::new()),
            tuned: Cell::new(0),
            hits: Cell::new(0),
        }
    }

    /// The adapter, driver, lavapipe width and kernel set the choices are kept for: what a
    /// run's numbers are bitwise reproducible on (`Engine::identity`).
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    pub fn mode(&self) -> TuneMode {
        self.mode.get()
    }

    pub fn set_mode(&self, mode: TuneMode) {
        self.mode.set(mode);
        self.memo.borrow_mut().clear();
    }

    /// A decision this process already made for the shape hashed to `shape` (the outer
    /// None: not asked yet; the inner: the rule's choice stands).
    pub fn memo(&self, shape: u64) -> Option<Option<Choice>> {
        self.memo.borrow().get(&shape).copied()
    }

    pub fn remember(&self, shape: u64, choice: Option<Choice>) {
        self.memo.borrow_mut().insert(shape, choice);
    }

    /// Keeps the choices in `path` instead (tests); forgets what was loaded.
    pub fn set_path(&self, path: Option<PathBuf>) {
        *self.path.borrow_mut() = path;
        self.choices.borrow_mut().clear();
        self.memo.borrow_mut().clear();
        self.loaded.set(false);
    }

    pub fn path(&self) -> Option<PathBuf> {
        self.path.borrow().clone()
    }

    /// The cached choice for `key`, reading the cache file first if need be.
    pub fn lookup(&self, key: &str) -> Option<Choice> {
        if self.mode.get() == TuneMode::Off {
            return None;
        }
        self.load();
        let hit = self.choices.borrow().get(key).copied();
        if hit.is_some() {
            self.hits.set(self.hits.get() + 1);
        }
        hit
    }

    /// Whether a shape without a cached choice is to be timed now.
    pub fn tunes(&self) -> bool {
        self.mode.get() == TuneMode::Tune
    }

    /// Keeps a measured choice, and writes the cache file (whole and atomically).
    pub fn record(&self, key: String, choice: Choice) {
        self.tuned.set(self.tuned.get() + 1);
        self.choices.borrow_mut().insert(key, choice);
        self.save();
    }

    /// Every choice known, by shape key.
    pub fn choices(&self) -> BTreeMap<String, Choice> {
        self.load();
        self.choices.borrow().clone()
    }

    /// Reads the cache file once. A damaged or foreign file is reported in one line and
    /// replaced at the next save: tuning again costs seconds, a wrong choice only speed.
    fn load(&self) {
        if self.loaded.replace(true) {
            return;
        }
        let Some(path) = self.path() else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        match serde_json::from_str::<CacheFile>(&text) {
            Ok(f) if f.version == CACHE_VERSION && f.adapter == self.adapter => {
                self.choices.borrow_mut().extend(f.choices);
            }
            Ok(_) => eprintln!(
                "activegen: {}: tuning cache of another version or adapter; tuning again",
                path.display()
            ),
            Err(e) => eprintln!(
                "activegen: {}: damaged tuning cache ({e}); tuning again",
                path.display()
            ),
        }
    }

    fn save(&self) {
        let Some(path) = self.path() else {
            return;
        };
        let file = CacheFile {
            version: CACHE_VERSION,
            adapter: self.adapter.clone(),
            choices: self.choices.borrow().clone(),
        };
        let text = serde_json::to_string_pretty(&file).expect("tuning choices serialise");
        // A cache that cannot be written costs the next run its tuning, nothing else.
        if let Err(e) = super::files::write_atomic(&path, text.as_bytes()) {
            eprintln!("activegen: {e:#}; tuning choices are not kept");
        }
    }
}

/// Times `candidates` (each a closure that records one run), interleaved: one warm-up run
/// each (it also builds and JIT-compiles the pipeline), then `rounds` rounds in which every
/// candidate runs `reps` times between two waits. Returns each candidate's median ms per run.
pub fn time_interleaved(
    sync: &dyn Fn(),
    candidates: &mut [&mut dyn FnMut() -> anyhow::Result<()>],
    rounds: usize,
    reps: usize,
) -> anyhow::Result<Vec<f64>> {
    for run in candidates.iter_mut() {
        run()?;
    }
    sync();
    let mut times = vec![vec![]; candidates.len()];
    for _ in 0..rounds {
        for (i, run) in candidates.iter_mut().enumerate() {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                run()?;
            }
            sync();
            times[i].push(t.elapsed().as_secs_f64() * 1e3 / reps as f64);
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}

/// FNV-1a, for file names and the kernel-set digest.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A digest of every kernel's source: choices measured on other kernels are not reused.
fn kernels_digest() -> u64 {
    let mut all = Vec::new();
    for (stem, src) in super::shaders::SHADERS {
        all.extend_from_slice(stem.as_bytes());
        all.extend_from_slice(src.as_bytes());
    }
    fnv1a(&all)
}
