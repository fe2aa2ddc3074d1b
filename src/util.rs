//! Small helpers shared by the commands: atomic writes and the cache directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `data` to `path` through a temporary file and a rename, so a crash never leaves
/// a half-written file behind. Concurrent writers of one path (threads or processes
/// filling the same cache entry) each use their own temporary file; the last rename wins.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("{}: cannot create directory", d.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp.push(format!(".tmp{}-{n}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot rename into place", path.display()))?;
    Ok(())
}

/// `$ACTIVEGEN_CACHE`, else the platform cache directory, else `./.activegen-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ACTIVEGEN_CACHE") {
        return PathBuf::from(d);
    }
    dirs::cache_dir()
        .map(|d| d.join("activegen"))
        .unwrap_or_else(|| PathBuf::from(".activegen-cache"))
}

/// A small seeded generator for host-side randomness (data order, fixed latents, pool
/// subsampling): SplitMix64, so any (seed, stream) pair is reproducible everywhere.
#[derive(Clone, Debug)]
pub struct HostRng(pub u64);

impl HostRng {
    pub fn new(seed: u64, stream: u64) -> HostRng {
        let mut r = HostRng(seed ^ stream.wrapping_mul(0xD1B54A32D192ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Several test threads filling one cache entry at once: each rename must find its
    // own temporary file (a per-process name made all but the first fail).
    #[test]
    fn concurrent_atomic_writes_of_one_path_all_succeed() {
        let dir = std::env::temp_dir().join(format!("activegen-atomic-{}", std::process::id()));
        let path = dir.join("entry.bin");
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        write_atomic(&path, &[i; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 4096);
        assert!(data.iter().all(|&b| b == data[0] && b < 8));
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(leftovers, 1, "temporary files were left behind");
    }
}
