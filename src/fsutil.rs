//! Small file-system helpers: sorted sub-folders, and writes that are complete or absent.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The folders directly under `p`, sorted by name; none if `p` does not exist.
pub fn subdirs(p: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if p.is_dir() {
        for e in std::fs::read_dir(p).with_context(|| format!("listing {}", p.display()))? {
            let path = e?.path();
            if path.is_dir() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `rows` as a CSV file with a header, atomically (see [`write_atomic`]).
pub fn write_csv<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row).with_context(|| format!("writing {}", path.display()))?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", Path::new(&tmp).display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
