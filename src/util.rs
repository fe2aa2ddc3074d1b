//! Small helpers shared by the commands: atomic writes and the cache directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `data` to `path` through a temporary file and a rename, so a crash never leaves
/// a half-written file behind.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d).with_context(|| format!("{}: cannot create directory", d.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.write_all(data).with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename into place", path.display()))?;
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
