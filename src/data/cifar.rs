//! CIFAR-10, binary version: found in the data folder, else downloaded from the canonical address,
//! md5-checked and unpacked. Each batch file holds records of 3,073 bytes: a label byte, then 1,024
//! red, 1,024 green and 1,024 blue bytes (row-major 32x32).

use super::ImageSet;
use super::download::{download, md5_file};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
pub const MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
pub const ARCHIVE: &str = "cifar-10-binary.tar.gz";
pub const FOLDER: &str = "cifar-10-batches-bin";
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILE: &str = "test_batch.bin";
pub const RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// Where CIFAR-10 comes from; tests point it at a local server and smaller files.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub md5: String,
    /// Records in each batch file (10,000 in the real dataset).
    pub records_per_file: usize,
}

impl Default for Source {
    fn default() -> Self {
        Source { url: URL.into(), md5: MD5.into(), records_per_file: 10_000 }
    }
}

fn hint(data_dir: &Path, source: &Source) -> String {
    format!(
        "HINT: download {} (md5 {}) by hand and place it in {}/, or pass --data-dir to a folder that has it \
         (or its unpacked {FOLDER}/); --dataset fashion-mnist runs on a dataset Debian packages",
        source.url,
        source.md5,
        data_dir.display()
    )
}

fn unpacked(data_dir: &Path) -> PathBuf {
    data_dir.join(FOLDER)
}

fn is_unpacked(data_dir: &Path) -> bool {
    let dir = unpacked(data_dir);
    TRAIN_FILES.iter().chain([&TEST_FILE]).all(|f| dir.join(f).is_file())
}

/// Makes sure `<data_dir>/cifar-10-batches-bin/` exists: unpacks the archive found in `data_dir`, or
/// downloads it first when `allow_download`. Returns the folder.
pub fn ensure_available(data_dir: &Path, source: &Source, allow_download: bool) -> Result<PathBuf> {
    if is_unpacked(data_dir) {
        return Ok(unpacked(data_dir));
    }
    // One process downloads and unpacks; another waits, then finds it unpacked.
    let _lock = crate::fsutil::FileLock::take(&data_dir.join(".cifar-10.lock"), |who| {
        eprintln!("waiting for {who}, which is fetching CIFAR-10 into {}", data_dir.display())
    })?;
    if is_unpacked(data_dir) {
        return Ok(unpacked(data_dir));
    }
    let archive = data_dir.join(ARCHIVE);
    if archive.exists() {
        let got = md5_file(&archive)?;
        if got != source.md5 {
            bail!(
                "{}: md5 {got}, expected {} (a partial or different file?); delete it to download again\n{}",
                archive.display(),
                source.md5,
                hint(data_dir, source)
            );
        }
    } else if allow_download {
        download(&source.url, &source.md5, &archive)
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", hint(data_dir, source)))?;
    } else {
        bail!(
            "CIFAR-10 not found in {} and downloads are off\n{}",
            data_dir.display(),
            hint(data_dir, source)
        );
    }
    unpack(&archive, data_dir)?;
    ensure!(
        is_unpacked(data_dir),
        "{} did not contain {FOLDER}/ with {} and {TEST_FILE}",
        archive.display(),
        TRAIN_FILES.join(", ")
    );
    Ok(unpacked(data_dir))
}

/// Unpacks into a temporary folder, then moves `cifar-10-batches-bin/` into place in one rename.
fn unpack(archive: &Path, data_dir: &Path) -> Result<()> {
    let tmp = data_dir.join(format!(".unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| {
        let f = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
        tar::Archive::new(flate2::read::GzDecoder::new(f))
            .unpack(&tmp)
            .with_context(|| format!("unpacking {}", archive.display()))?;
        let inner = tmp.join(FOLDER);
        ensure!(inner.is_dir(), "{} has no {FOLDER}/ folder", archive.display());
        let dest = unpacked(data_dir);
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&inner, &dest)
            .with_context(|| format!("moving {} to {}", inner.display(), dest.display()))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Reads one batch file, checking its size and every label.
pub fn read_batch(path: &Path, records: usize) -> Result<ImageSet> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let expected = records * RECORD_BYTES;
    ensure!(
        bytes.len() == expected,
        "{}: {} bytes, expected {expected} ({records} records of {RECORD_BYTES} bytes){}",
        path.display(),
        bytes.len(),
        if bytes.len() % RECORD_BYTES != 0 {
            "; not even a multiple of 3073: truncated or not CIFAR-10"
        } else {
            ""
        }
    );
    let mut labels = Vec::with_capacity(records);
    let mut pixels = Vec::with_capacity(records * (RECORD_BYTES - 1));
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        ensure!(record[0] < 10, "{}: record {i} has label {}, expected 0..9", path.display(), record[0]);
        labels.push(i64::from(record[0]));
        pixels.extend_from_slice(&record[1..]);
    }
    Ok(ImageSet {
        images: Tensor::from_slice(&pixels).view([records as i64, 3, 32, 32]),
        labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
    })
}

/// Loads CIFAR-10 (downloading it if needed and allowed): (train 50k, test 10k), u8 images.
pub fn load(data_dir: &Path, source: &Source, allow_download: bool) -> Result<(ImageSet, ImageSet, PathBuf)> {
    let dir = ensure_available(data_dir, source, allow_download)?;
    let parts: Vec<ImageSet> = TRAIN_FILES
        .iter()
        .map(|f| read_batch(&dir.join(f), source.records_per_file))
        .collect::<Result<_>>()?;
    let train = ImageSet::cat(&parts);
    let test = read_batch(&dir.join(TEST_FILE), source.records_per_file)?;
    Ok((train, test, dir))
}
