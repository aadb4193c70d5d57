//! CIFAR-100, binary version: as CIFAR-10 (found in the data folder, else downloaded, md5-checked
//! and unpacked), with 100 fine classes grouped in 20 coarse ones. `train.bin` (50,000 records)
//! and `test.bin` (10,000) hold records of 3,074 bytes: the coarse label, the fine label, then
//! 1,024 red, 1,024 green and 1,024 blue bytes (row-major 32x32).

use super::ImageSet;
use super::cifar::{Archive, fetch};
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
pub const MD5: &str = "03b5dce01913d631647c71ecec9e9cb8";
pub const RECORD_BYTES: usize = 2 + 3 * 32 * 32;

/// CIFAR-100's archive.
pub const ARCHIVE: Archive = Archive {
    name: "CIFAR-100",
    file: "cifar-100-binary.tar.gz",
    folder: "cifar-100-binary",
    files: &["train.bin", "test.bin"],
};

/// Which of a record's two labels a run learns: `labels = "fine"` (100 classes, the default) or
/// `"coarse"` (20 superclasses) in `[data]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Labels {
    #[default]
    Fine,
    Coarse,
}

impl Labels {
    pub fn classes(self) -> usize {
        match self {
            Labels::Fine => 100,
            Labels::Coarse => 20,
        }
    }

    /// The archive's file of this kind's class names, one per line.
    fn names_file(self) -> &'static str {
        match self {
            Labels::Fine => "fine_label_names.txt",
            Labels::Coarse => "coarse_label_names.txt",
        }
    }
}

/// Where CIFAR-100 comes from; tests point it at a local server and smaller files.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub md5: String,
    /// Records in train.bin and test.bin (50,000 and 10,000 in the real dataset).
    pub records: (usize, usize),
}

impl Default for Source {
    fn default() -> Self {
        Source { url: URL.into(), md5: MD5.into(), records: (50_000, 10_000) }
    }
}

/// Reads one file of `records` records, checking its size and both labels of every record, and
/// keeps the `labels` ones.
pub fn read_file(path: &Path, records: usize, labels: Labels) -> Result<ImageSet> {
    let bytes = super::cifar::read_records(path, (records, RECORD_BYTES), "CIFAR-100")?;
    let mut out = Vec::with_capacity(records);
    let mut pixels = Vec::with_capacity(records * (RECORD_BYTES - 2));
    for (i, r) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let (coarse, fine) = (r[0], r[1]);
        ensure!(coarse < 20, "{}: record {i} has coarse label {coarse}, expected 0..19", path.display());
        ensure!(fine < 100, "{}: record {i} has fine label {fine}, expected 0..99", path.display());
        out.push(i64::from(if labels == Labels::Fine { fine } else { coarse }));
        pixels.extend_from_slice(&r[2..]);
    }
    Ok(ImageSet {
        images: Tensor::from_slice(&pixels).view([records as i64, 3, 32, 32]),
        labels: Tensor::from_slice(&out).to_kind(Kind::Int64),
    })
}

/// Loads CIFAR-100 (downloading it if needed and allowed): (train 50k, test 10k, the folder, the
/// class names of `labels`, from the archive's list when it has one).
pub fn load(
    data_dir: &Path,
    source: &Source,
    labels: Labels,
    allow_download: bool,
) -> Result<(ImageSet, ImageSet, PathBuf, Vec<String>)> {
    let dir = fetch(data_dir, &ARCHIVE, (&source.url, &source.md5), allow_download)?;
    let train = read_file(&dir.join("train.bin"), source.records.0, labels)?;
    let test = read_file(&dir.join("test.bin"), source.records.1, labels)?;
    let names = std::fs::read_to_string(dir.join(labels.names_file()))
        .map(|t| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect::<Vec<_>>())
        .ok()
        .filter(|n| n.len() == labels.classes())
        .unwrap_or_else(|| (0..labels.classes()).map(|i| format!("class {i}")).collect());
    Ok((train, test, dir, names))
}
