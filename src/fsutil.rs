//! Small file-system helpers: sorted sub-folders, and writes that are complete or absent and,
//! once done, durable (fsynced: the file, then its folder).

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

/// Writes `bytes` to `path` durably and atomically (see [`write_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| std::fs::write(tmp, bytes).map_err(anyhow::Error::from))
}

/// Writes `path` through `write` into a temporary file beside it, then [`commit`]s it: the file is
/// complete or absent, and once this returns it survives a power cut. A failed write (a full
/// disk, a file-size limit, a read-only folder) is an error naming the file and the cause, and
/// leaves any previous `path` as it was.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = write(&tmp).and_then(|()| commit(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

/// Makes a complete temporary file or folder `tmp` the durable `dest`, as databases do: its data is
/// synced (for a folder, each file in it and the folder), then it is renamed over `dest`, then the
/// parent folder's entry is synced.
pub fn commit(tmp: &Path, dest: &Path) -> Result<()> {
    if tmp.is_dir() {
        for e in std::fs::read_dir(tmp).with_context(|| format!("listing {}", tmp.display()))? {
            let p = e?.path();
            if p.is_file() {
                sync(&p)?;
            }
        }
    }
    sync(tmp)?;
    std::fs::rename(tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    sync(dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// fsync of a file or a folder.
pub fn sync(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {} to sync it", path.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", path.display()))
}

/// An exclusive OS lock (`flock`) on a file: held until dropped, and released by the kernel when
/// the process dies, so a lock is never stale. The holder's pid is written in the file, for
/// messages.
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn open(path: &Path) -> Result<std::fs::File> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))
    }

    fn held(mut file: std::fs::File, path: &Path) -> Result<FileLock> {
        use std::io::{Seek, Write};
        file.set_len(0)
            .and_then(|()| file.rewind())
            .with_context(|| format!("writing {}", path.display()))?;
        write!(file, "{}", std::process::id()).with_context(|| format!("writing {}", path.display()))?;
        Ok(FileLock { _file: file })
    }

    /// The lock, or `None` while another live process holds it.
    pub fn try_take(path: &Path) -> Result<Option<FileLock>> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Self::held(file, path).map(Some),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// The lock, waiting while another process holds it (`waiting` is called once if so).
    pub fn take(path: &Path, waiting: impl FnOnce(&str)) -> Result<FileLock> {
        if let Some(lock) = Self::try_take(path)? {
            return Ok(lock);
        }
        waiting(&Self::holder(path));
        let file = Self::open(path)?;
        file.lock().with_context(|| format!("locking {}", path.display()))?;
        Self::held(file, path)
    }

    /// Who holds the lock at `path`: `pid 1234`, as it wrote there.
    pub fn holder(path: &Path) -> String {
        match std::fs::read_to_string(path) {
            Ok(pid) if !pid.trim().is_empty() => format!("pid {}", pid.trim()),
            _ => "another process".into(),
        }
    }
}

/// A TOML file parsed as `T`; the error names the file (and, from the parser, the line and key).
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
