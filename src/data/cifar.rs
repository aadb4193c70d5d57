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
/// The class names, by label (the archive's batches.meta.txt).
pub const CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

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

/// One of the CIFAR archives: what it is called, where it unpacks and which files it must hold.
#[derive(Debug, Clone, Copy)]
pub struct Archive {
    /// `CIFAR-10`, for messages.
    pub name: &'static str,
    /// The archive's file name in the data folder.
    pub file: &'static str,
    /// The folder it unpacks to, in the data folder.
    pub folder: &'static str,
    /// The files that folder must hold.
    pub files: &'static [&'static str],
}

/// CIFAR-10's archive.
pub const CIFAR10: Archive = Archive {
    name: "CIFAR-10",
    file: ARCHIVE,
    folder: FOLDER,
    files: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        TEST_FILE,
    ],
};

fn hint(data_dir: &Path, a: &Archive, url: &str, md5: &str) -> String {
    format!(
        "HINT: download {url} (md5 {md5}) by hand and place it in {}/, or pass --data-dir to a folder that has it \
         (or its unpacked {}/); --dataset fashion-mnist runs on a dataset Debian packages",
        data_dir.display(),
        a.folder
    )
}

fn is_unpacked(data_dir: &Path, a: &Archive) -> bool {
    let dir = data_dir.join(a.folder);
    a.files.iter().all(|f| dir.join(f).is_file())
}

/// Makes sure `<data_dir>/cifar-10-batches-bin/` exists: unpacks the archive found in `data_dir`, or
/// downloads it first when `allow_download`. Returns the folder.
pub fn ensure_available(data_dir: &Path, source: &Source, allow_download: bool) -> Result<PathBuf> {
    fetch(data_dir, &CIFAR10, (&source.url, &source.md5), allow_download)
}

/// Makes sure archive `a`'s folder exists in `data_dir`: unpacks the archive found there, or
/// downloads it from `url` first (md5-checked) when `allow_download`. Returns the folder.
pub fn fetch(
    data_dir: &Path,
    a: &Archive,
    (url, md5): (&str, &str),
    allow_download: bool,
) -> Result<PathBuf> {
    if is_unpacked(data_dir, a) {
        return Ok(data_dir.join(a.folder));
    }
    // One process downloads and unpacks; another waits, then finds it unpacked.
    let lock = data_dir.join(format!(".{}.lock", a.name.to_ascii_lowercase()));
    let _lock = crate::fsutil::FileLock::take(&lock, |who| {
        eprintln!("waiting for {who}, which is fetching {} into {}", a.name, data_dir.display())
    })?;
    if is_unpacked(data_dir, a) {
        return Ok(data_dir.join(a.folder));
    }
    let archive = data_dir.join(a.file);
    if archive.exists() {
        let got = md5_file(&archive)?;
        if got != md5 {
            bail!(
                "{}: md5 {got}, expected {md5} (a partial or different file?); delete it to download again\n{}",
                archive.display(),
                hint(data_dir, a, url, md5)
            );
        }
    } else if allow_download {
        download(url, md5, &archive)
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", hint(data_dir, a, url, md5)))?;
    } else {
        bail!(
            "{} not found in {} and downloads are off\n{}",
            a.name,
            data_dir.display(),
            hint(data_dir, a, url, md5)
        );
    }
    unpack(&archive, data_dir, a.folder)?;
    ensure!(
        is_unpacked(data_dir, a),
        "{} did not contain {}/ with {}",
        archive.display(),
        a.folder,
        a.files.join(", ")
    );
    Ok(data_dir.join(a.folder))
}

/// Unpacks into a temporary folder, then moves `folder/` into place in one rename.
fn unpack(archive: &Path, data_dir: &Path, folder: &str) -> Result<()> {
    let tmp = data_dir.join(format!(".unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| {
        let f = std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
        tar::Archive::new(flate2::read::GzDecoder::new(f))
            .unpack(&tmp)
            .with_context(|| format!("unpacking {}", archive.display()))?;
        let inner = tmp.join(folder);
        ensure!(inner.is_dir(), "{} has no {folder}/ folder", archive.display());
        let dest = data_dir.join(folder);
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&inner, &dest)
            .with_context(|| format!("moving {} to {}", inner.display(), dest.display()))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// A file of `records` records of `size` bytes each (of dataset `name`), read whole, its size
/// checked.
pub fn read_records(path: &Path, (records, size): (usize, usize), name: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let expected = records * size;
    ensure!(
        bytes.len() == expected,
        "{}: {} bytes, expected {expected} ({records} records of {size} bytes){}",
        path.display(),
        bytes.len(),
        if bytes.len() % size != 0 {
            format!("; not even a multiple of {size}: truncated or not {name}")
        } else {
            String::new()
        }
    );
    Ok(bytes)
}

/// Reads one batch file, checking its size and every label.
pub fn read_batch(path: &Path, records: usize) -> Result<ImageSet> {
    let bytes = read_records(path, (records, RECORD_BYTES), "CIFAR-10")?;
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
