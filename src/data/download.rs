//! Downloads with an md5 check. A file appears under its final name only once its checksum matches:
//! the bytes go to `<name>.part`, which is renamed on success and removed on any failure, so an
//! interrupted or corrupted download never leaves anything that looks valid.

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The md5 of a file, as lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Downloads `url` to `dest` and checks its md5 (`expected_md5`, hex). Shows a progress bar on a
/// terminal. On any failure nothing is left at `dest` or at its `.part` file.
///
/// Two processes downloading the same file do not both write it: the second waits for the first
/// (an OS lock on `<dest>.lock`) and then finds the file there.
pub fn download(url: &str, expected_md5: &str, dest: &Path) -> Result<()> {
    let mut lock = dest.as_os_str().to_os_string();
    lock.push(".lock");
    let _lock = crate::fsutil::FileLock::take(Path::new(&lock), |who| {
        eprintln!("waiting for {who}, which is downloading {}", dest.display())
    })?;
    if dest.exists() {
        return Ok(());
    }
    let part = part_path(dest);
    let result = fetch_to(url, expected_md5, &part);
    match result {
        Ok(()) => std::fs::rename(&part, dest)
            .with_context(|| format!("renaming {} to {}", part.display(), dest.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

fn fetch_to(url: &str, expected_md5: &str, part: &Path) -> Result<()> {
    if let Some(dir) = part.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build(),
    );
    let response = agent.get(url).call().with_context(|| format!("downloading {url}"))?;
    let length = response.body().content_length();
    let mut reader = response.into_body().into_reader();
    let mut out = File::create(part).with_context(|| format!("creating {}", part.display()))?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = length.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_message(format!("downloading {}", url.rsplit('/').next().unwrap_or(url)));
        bar
    } else {
        eprintln!(
            "downloading {url}{}",
            length.map(|l| format!(" ({:.1} MB)", l as f64 / 1e6)).unwrap_or_default()
        );
        ProgressBar::hidden()
    };
    let mut hasher = Md5::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("downloading {url}: the connection broke after {received} bytes"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).with_context(|| format!("writing {}", part.display()))?;
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    out.sync_all().with_context(|| format!("writing {}", part.display()))?;
    if let Some(l) = length
        && received != l
    {
        bail!("downloading {url}: received {received} of {l} bytes");
    }
    let got = hex(&hasher.finalize());
    if got != expected_md5.to_ascii_lowercase() {
        bail!("downloading {url}: md5 {got}, expected {expected_md5} ({received} bytes received)");
    }
    Ok(())
}
