//! Files the engine and the application both write: atomic writes, the cache directory,
//! and the crash-test hook inside checkpoint writes.

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
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.sync_all().ok();
        std::fs::rename(&tmp, path)
            .with_context(|| format!("{}: cannot rename into place", path.display()))
    })();
    if written.is_err() {
        // A full disk, say: nothing half-written stays behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
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

/// A crash-test hook: `ACTIVEGEN_FAULT=NAME:N` aborts the process (as `kill -9` would
/// stop it: no destructors, no flushing) the N-th time the point NAME is reached. The
/// kill tests use it to stop a run at exact places inside a checkpoint write; without the
/// variable it costs one comparison.
pub fn fault_point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static FAULT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let fault = FAULT.get_or_init(|| {
        let v = std::env::var("ACTIVEGEN_FAULT").ok()?;
        let (n, k) = v.rsplit_once(':').unwrap_or((&v, "1"));
        Some((n.to_string(), k.parse().unwrap_or(1)))
    });
    if let Some((n, k)) = fault {
        if n == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *k {
            eprintln!("activegen: ACTIVEGEN_FAULT: aborting at {name} (hit {k})");
            std::process::abort();
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
