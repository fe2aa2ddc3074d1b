//! Checkpoints: model state as safetensors with PyTorch state_dict names and shapes, so
//! `safetensors.torch.load_file` + `load_state_dict` work on the equivalent module.
//! Every file is written atomically (temporary file, then rename).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};

use crate::engine::nn::{Module, Named};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// Host copies of named tensors, ready to serialise.
pub struct HostTensors {
    pub f32s: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub i64s: Vec<(String, Vec<usize>, Vec<i64>)>,
}

impl HostTensors {
    pub fn new() -> HostTensors {
        HostTensors {
            f32s: vec![],
            i64s: vec![],
        }
    }

    pub fn push_gpu(&mut self, g: &Engine, name: &str, t: &Tensor) {
        self.f32s
            .push((name.to_string(), t.shape().to_vec(), t.to_vec(g)));
    }

    pub fn save(&self, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        let f32_bytes: Vec<Vec<u8>> = self
            .f32s
            .iter()
            .map(|(_, _, d)| bytemuck::cast_slice(d).to_vec())
            .collect();
        let i64_bytes: Vec<Vec<u8>> = self
            .i64s
            .iter()
            .map(|(_, _, d)| bytemuck::cast_slice(d).to_vec())
            .collect();
        let mut views: Vec<(String, TensorView)> = vec![];
        for ((name, shape, _), bytes) in self.f32s.iter().zip(&f32_bytes) {
            views.push((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ));
        }
        for ((name, shape, _), bytes) in self.i64s.iter().zip(&i64_bytes) {
            views.push((
                name.clone(),
                TensorView::new(Dtype::I64, shape.clone(), bytes)?,
            ));
        }
        let data = safetensors::tensor::serialize(views, metadata)
            .map_err(|e| anyhow!("{}: cannot serialise: {e}", path.display()))?;
        crate::util::write_atomic(path, &sorted_header(data))
    }

    /// The name of the first tensor holding a NaN or an infinity.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.f32s
            .iter()
            .find(|(_, _, d)| d.iter().any(|v| !v.is_finite()))
            .map(|(n, _, _)| n.as_str())
    }
}

/// The safetensors header with its keys (and the metadata's) in sorted order, padded to
/// its old length: the library writes the metadata map in hash order, so two identical
/// checkpoints would differ byte for byte.
fn sorted_header(mut data: Vec<u8>) -> Vec<u8> {
    use std::collections::BTreeMap;
    let Some(n) = data
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    else {
        return data;
    };
    let Some(Ok(serde_json::Value::Object(map))) = data
        .get(8..8 + n)
        .map(serde_json::from_slice::<serde_json::Value>)
    else {
        return data;
    };
    let sorted: BTreeMap<String, serde_json::Value> = map
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::Object(m) => {
                let inner: BTreeMap<String, serde_json::Value> = m.into_iter().collect();
                (k, serde_json::to_value(inner).unwrap_or_default())
            }
            other => (k, other),
        })
        .collect();
    match serde_json::to_vec(&sorted) {
        Ok(mut h) if h.len() <= n => {
            h.resize(n, b' ');
            data[8..8 + n].copy_from_slice(&h);
            data
        }
        _ => data,
    }
}

impl Default for HostTensors {
    fn default() -> Self {
        Self::new()
    }
}

/// The module's state_dict on the host: parameters, buffers and num_batches_tracked.
pub fn state_dict(g: &Engine, m: &dyn Module) -> HostTensors {
    let mut h = HostTensors::new();
    for Named { name, tensor } in m.params().into_iter().chain(m.buffers()) {
        h.push_gpu(g, &name, &tensor);
    }
    for (prefix, bn) in m.batchnorms() {
        h.i64s.push((
            format!("{prefix}.num_batches_tracked"),
            vec![],
            vec![bn.batches.get() as i64],
        ));
    }
    h
}

pub fn save_module(
    g: &Engine,
    m: &dyn Module,
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    state_dict(g, m).save(path, metadata)
}

/// A safetensors file read fully into memory, checked tensor by tensor on request.
pub struct Loaded {
    path: String,
    bytes: Vec<u8>,
}

impl Loaded {
    pub fn open(path: &Path) -> Result<Loaded> {
        let bytes =
            std::fs::read(path).map_err(|e| anyhow!("{}: {}", path.display(), io_reason(&e)))?;
        Loaded::from_bytes(bytes, &path.display().to_string())
    }

    /// Like `open` for bytes already in memory; `name` is used in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Loaded> {
        safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{name}: not a valid safetensors file ({e})"))?;
        Ok(Loaded {
            path: name.to_string(),
            bytes,
        })
    }

    fn st(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.bytes).expect("validated in open")
    }

    pub fn metadata(&self) -> HashMap<String, String> {
        safetensors::SafeTensors::read_metadata(&self.bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }

    /// The f32 tensor `name`, which must have `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let st = self.st();
        let v = st
            .tensor(name)
            .map_err(|_| anyhow!("{}: tensor '{name}' is missing", self.path))?;
        if v.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor '{name}' is {:?}, expected F32",
                self.path,
                v.dtype()
            );
        }
        if v.shape() != shape {
            bail!(
                "{}: tensor '{name}' has shape {:?} but the model expects {:?} (was it trained with other widths or resolution?)",
                self.path,
                v.shape(),
                shape
            );
        }
        let values: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: tensor '{name}' holds {} at element {i}; a checkpoint with non-finite values is refused",
                self.path,
                values[i]
            );
        }
        Ok(values)
    }

    pub fn i64_scalar(&self, name: &str) -> Option<i64> {
        let st = self.st();
        let v = st.tensor(name).ok()?;
        (v.dtype() == Dtype::I64 && v.data().len() == 8)
            .then(|| i64::from_le_bytes(v.data().try_into().unwrap()))
    }

    /// The values of a module's state dict, `expected` (name, shape) in order, checked
    /// first: every tensor present, F32, of its shape and finite, and nothing else in the
    /// file but the batch norms' `num_batches_tracked` counters. Host-side only, so the
    /// fuzz target runs it as loading does.
    pub fn state_dict_values(
        &self,
        expected: &[(String, Vec<usize>)],
        batchnorms: &[String],
    ) -> Result<Vec<Vec<f32>>> {
        let mut values = Vec::with_capacity(expected.len());
        for (name, shape) in expected {
            values.push(self.f32(name, shape)?);
        }
        let known: std::collections::HashSet<String> = expected
            .iter()
            .map(|(n, _)| n.clone())
            .chain(
                batchnorms
                    .iter()
                    .map(|p| format!("{p}.num_batches_tracked")),
            )
            .collect();
        if let Some(extra) = self.names().into_iter().find(|n| !known.contains(n)) {
            bail!(
                "{}: unexpected tensor '{extra}' (a checkpoint of another model?)",
                self.path
            );
        }
        Ok(values)
    }

    pub fn names(&self) -> Vec<String> {
        self.st()
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Loads a state_dict into the module, checking every name and shape first so a
/// mismatched checkpoint changes nothing.
pub fn load_module(g: &Engine, m: &dyn Module, path: &Path) -> Result<()> {
    load_module_from(g, m, &Loaded::open(path)?)
}

/// `load_module` from a file already read (the browser gets a checkpoint's bytes, not a path).
pub fn load_module_from(g: &Engine, m: &dyn Module, file: &Loaded) -> Result<()> {
    let named: Vec<Named> = m.params().into_iter().chain(m.buffers()).collect();
    let expected: Vec<(String, Vec<usize>)> = named
        .iter()
        .map(|n| (n.name.clone(), n.tensor.shape().to_vec()))
        .collect();
    let batchnorms: Vec<String> = m.batchnorms().into_iter().map(|(p, _)| p).collect();
    let values = file.state_dict_values(&expected, &batchnorms)?;
    for (n, v) in named.iter().zip(values) {
        n.tensor.write(g, &v);
    }
    for (prefix, bn) in m.batchnorms() {
        if let Some(c) = file.i64_scalar(&format!("{prefix}.num_batches_tracked")) {
            bn.batches.set(c.max(0) as u64);
        }
    }
    Ok(())
}

/// Reads a JSON file with a one-line error naming it.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("{}: {}", path.display(), io_reason(&e)))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    crate::util::write_atomic(path, text.as_bytes())
}

/// Where a checkpoint file is written before its checkpoint is committed.
pub fn staged(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".staged");
    p.into()
}

/// The files of one checkpoint with their sizes and content hashes. A checkpoint is
/// written in three steps, so a crash at any point leaves one whole checkpoint:
/// 1. every file is written as `NAME.staged` beside the current checkpoint's files;
/// 2. the run's state file, with this manifest, is written atomically: the commit;
/// 3. `publish` renames the staged files over the old ones.
///
/// A crash before 2 leaves the previous checkpoint untouched (its staged successors are
/// discarded on resume); a crash during 3 is finished on resume by `roll_forward`, which
/// publishes the staged files whose digests the committed manifest records. `verify` then
/// tells a whole checkpoint from a mixed one (files changed by hand, say).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub files: std::collections::BTreeMap<String, FileDigest>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    /// FNV-1a 64 of the contents, hex.
    pub fnv1a: String,
}

fn digest(path: &Path) -> Result<FileDigest> {
    let data = std::fs::read(path).map_err(|e| anyhow!("{}: {}", path.display(), io_reason(&e)))?;
    Ok(FileDigest {
        bytes: data.len() as u64,
        fnv1a: format!("{:016x}", fnv1a64(&data)),
    })
}

pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Manifest {
    /// The manifest of files `names` in `dir`, as they are now.
    pub fn of(dir: &Path, names: &[String]) -> Result<Manifest> {
        let mut files = std::collections::BTreeMap::new();
        for n in names {
            files.insert(n.clone(), digest(&dir.join(n))?);
        }
        Ok(Manifest { files })
    }

    /// The manifest of staged files `names` in `dir` (step 1 above), under their final
    /// names.
    pub fn of_staged(dir: &Path, names: &[String]) -> Result<Manifest> {
        let mut files = std::collections::BTreeMap::new();
        for n in names {
            files.insert(n.clone(), digest(&staged(&dir.join(n)))?);
        }
        Ok(Manifest { files })
    }

    /// Step 3: renames the committed checkpoint's staged files into place.
    pub fn publish(&self, dir: &Path) -> Result<()> {
        for name in self.files.keys() {
            let (from, to) = (staged(&dir.join(name)), dir.join(name));
            if from.exists() {
                std::fs::rename(&from, &to).map_err(|e| {
                    anyhow!(
                        "{}: cannot publish the checkpoint: {}",
                        to.display(),
                        io_reason(&e)
                    )
                })?;
                crate::util::fault_point("checkpoint-publish");
            }
        }
        Ok(())
    }

    /// On resume: publishes the staged files that this (committed) manifest records, as
    /// `publish` would have had the run not stopped, and removes other staged files (those
    /// of a checkpoint that was never committed).
    pub fn roll_forward(&self, dir: &Path) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().to_string();
            let Some(name) = file.strip_suffix(".staged") else {
                continue;
            };
            match self.files.get(name) {
                Some(want) if &digest(&e.path())? == want => {
                    std::fs::rename(e.path(), dir.join(name)).map_err(|err| {
                        anyhow!(
                            "{}: cannot publish the checkpoint: {}",
                            dir.join(name).display(),
                            io_reason(&err)
                        )
                    })?;
                }
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Checks that every file in `dir` is the one this manifest recorded for the checkpoint
    /// of `what` (e.g. "step 500"); names the first that is not. An empty manifest (a run
    /// written before manifests existed) passes.
    pub fn verify(&self, dir: &Path, what: &str) -> Result<()> {
        for (name, want) in &self.files {
            let path = dir.join(name);
            if !path.exists() {
                bail!(
                    "{}: missing; the checkpoint of {what} is incomplete and cannot be resumed",
                    path.display()
                );
            }
            if &digest(&path)? != want {
                bail!(
                    "{}: not the file the checkpoint of {what} recorded (the run was interrupted while a later checkpoint was written, or the file was changed); resuming would mix two checkpoints, so it is refused",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// Before a checkpoint directory is read outside `--resume` (`sample`, `eval`): finishes
/// an interrupted publish and verifies the files against the committed manifest, found in
/// the directory's `state.json` (a `train` run) or its parent's `active_state.json` (the
/// `checkpoint/` of an `active` run). A directory without either is read as it is.
pub fn settle(dir: &Path) -> Result<()> {
    let state = [dir.join("state.json")]
        .into_iter()
        .chain(dir.parent().map(|p| p.join("active_state.json")))
        .find(|p| p.exists());
    let Some(path) = state else {
        return Ok(());
    };
    let v: serde_json::Value = read_json(&path)?;
    let manifest: Manifest = serde_json::from_value(v["checkpoint"].clone())
        .map_err(|e| anyhow!("{}: invalid checkpoint record ({e})", path.display()))?;
    manifest.roll_forward(dir)?;
    manifest.verify(dir, &format!("the commit in {}", path.display()))
}

/// Removes temporary files (`*.tmpPID-N`) that an interrupted atomic write left in `dir`.
/// On resume: one line where the run last stepped on another adapter, driver, lavapipe
/// width or kernel set (`Engine::identity`; recorded in `state_path`'s `device`). The run
/// continues; its numbers from here are not bitwise those of an uninterrupted run.
pub fn note_other_device(g: &Engine, recorded: &str, state_path: &Path) {
    if !recorded.is_empty() && recorded != g.identity() {
        eprintln!(
            "activegen: {}: the run last stepped on {recorded}; resuming on {}: it continues, but not bitwise as it would have there",
            state_path.display(),
            g.identity()
        );
    }
}

pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let stale = name.rsplit_once(".tmp").is_some_and(|(_, tail)| {
            !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit() || c == '-')
        });
        if stale && e.path().is_file() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
