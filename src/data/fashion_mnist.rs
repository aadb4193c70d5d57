//! Fashion-MNIST (IDX files, gzipped or not): a real dataset of CIFAR's size class that Debian
//! packages (`dataset-fashion-mnist`), for machines where CIFAR-10 cannot be fetched.
//! Looked up in `<data_dir>/fashion-mnist/`, then `<data_dir>/`, then the Debian package's folder;
//! else downloaded (md5-checked) into `<data_dir>/fashion-mnist/`.

use super::ImageSet;
use super::download::download;
use anyhow::{Context, Result, bail, ensure};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const BASE_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const FOLDER: &str = "fashion-mnist";
/// The class names, by label, short (T-shirt/top, trouser, pullover, dress, coat, sandal, shirt,
/// sneaker, bag, ankle boot).
pub const CLASSES: [&str; 10] =
    ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"];
/// (file stem, md5 of the .gz file)
pub const FILES: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe"),
    ("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79"),
    ("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310"),
];
const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;

/// Where Fashion-MNIST comes from; tests point it elsewhere.
#[derive(Debug, Clone)]
pub struct Source {
    pub base_url: String,
    /// (file stem, md5 of its .gz) for the four files, in [`FILES`]' order.
    pub files: Vec<(String, String)>,
    /// Folders searched after `<data_dir>/fashion-mnist` and `<data_dir>`.
    pub system_dirs: Vec<PathBuf>,
    /// (train, test) image counts: 60,000 and 10,000.
    pub counts: (usize, usize),
}

impl Default for Source {
    fn default() -> Self {
        Source {
            base_url: BASE_URL.into(),
            files: FILES.iter().map(|(s, m)| (s.to_string(), m.to_string())).collect(),
            system_dirs: vec![DEBIAN_DIR.into()],
            counts: (60_000, 10_000),
        }
    }
}

/// The file for `stem` in `dir`, gzipped or not.
fn find_in(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()].into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// The folder that has all four files, searching the data folder first.
fn locate(data_dir: &Path, source: &Source) -> Option<PathBuf> {
    let mut dirs = vec![data_dir.join(FOLDER), data_dir.to_path_buf()];
    dirs.extend(source.system_dirs.iter().cloned());
    dirs.into_iter().find(|d| FILES.iter().all(|(stem, _)| find_in(d, stem).is_some()))
}

/// Reads a whole file, gunzipping it if its name ends in `.gz`; more than `max` bytes (inflated) is
/// an error, so a corrupt or hostile file cannot make it allocate gigabytes.
fn read_maybe_gz(path: &Path, max: usize) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let limit = max as u64 + 1;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file)
            .take(limit)
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not a complete gzip file (truncated download?)", path.display()))?;
    } else {
        file.take(limit).read_to_end(&mut out).with_context(|| format!("reading {}", path.display()))?;
    }
    ensure!(out.len() <= max, "{}: more than the {max} bytes expected", path.display());
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Parses an IDX image file: magic 2051, count, rows, cols (big-endian), then the pixels.
pub fn parse_images(path: &Path, bytes: &[u8], expected_count: usize) -> Result<Tensor> {
    ensure!(
        bytes.len() >= 16,
        "{}: {} bytes, too short for an IDX image header (16)",
        path.display(),
        bytes.len()
    );
    let magic = be_u32(bytes, 0);
    ensure!(
        magic == IMAGES_MAGIC,
        "{}: magic number {magic}, expected {IMAGES_MAGIC} (IDX images)",
        path.display()
    );
    let (n, rows, cols) = (be_u32(bytes, 4) as usize, be_u32(bytes, 8) as usize, be_u32(bytes, 12) as usize);
    ensure!(n == expected_count, "{}: header says {n} images, expected {expected_count}", path.display());
    ensure!(rows == 28 && cols == 28, "{}: images are {rows}x{cols}, expected 28x28", path.display());
    let want = 16 + n * rows * cols;
    ensure!(
        bytes.len() == want,
        "{}: {} bytes, expected {want} for {n} images of {rows}x{cols}",
        path.display(),
        bytes.len()
    );
    Ok(Tensor::from_slice(&bytes[16..]).view([n as i64, 1, rows as i64, cols as i64]))
}

/// Parses an IDX label file: magic 2049, count, then one byte per label (0..9).
pub fn parse_labels(path: &Path, bytes: &[u8], expected_count: usize) -> Result<Tensor> {
    ensure!(
        bytes.len() >= 8,
        "{}: {} bytes, too short for an IDX label header (8)",
        path.display(),
        bytes.len()
    );
    let magic = be_u32(bytes, 0);
    ensure!(
        magic == LABELS_MAGIC,
        "{}: magic number {magic}, expected {LABELS_MAGIC} (IDX labels)",
        path.display()
    );
    let n = be_u32(bytes, 4) as usize;
    ensure!(n == expected_count, "{}: header says {n} labels, expected {expected_count}", path.display());
    ensure!(
        bytes.len() == 8 + n,
        "{}: {} bytes, expected {} for {n} labels",
        path.display(),
        bytes.len(),
        8 + n
    );
    if let Some(i) = bytes[8..].iter().position(|&l| l >= 10) {
        bail!("{}: label {i} is {}, expected 0..9", path.display(), bytes[8 + i]);
    }
    Ok(Tensor::from_slice(&bytes[8..]).to_kind(Kind::Int64))
}

/// Loads Fashion-MNIST: (train 60k, test 10k), u8 images 1x28x28, and the folder it came from.
pub fn load(data_dir: &Path, source: &Source, allow_download: bool) -> Result<(ImageSet, ImageSet, PathBuf)> {
    let dir = match locate(data_dir, source) {
        Some(dir) => dir,
        None if allow_download => {
            let dir = data_dir.join(FOLDER);
            for (stem, md5) in &source.files {
                let dest = dir.join(format!("{stem}.gz"));
                if !dest.exists() {
                    let url = format!("{}{stem}.gz", source.base_url);
                    download(&url, md5, &dest).map_err(|e| {
                        anyhow::anyhow!(
                            "{e:#}\nHINT: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) installs it in \
                             {DEBIAN_DIR}, or place the four .gz files in {}",
                            dir.display()
                        )
                    })?;
                }
            }
            dir
        }
        None => bail!(
            "Fashion-MNIST not found in {}, {} or {} and downloads are off\nHINT: `apt-get install \
             dataset-fashion-mnist`, or place {} (.gz or not) in {}",
            data_dir.join(FOLDER).display(),
            data_dir.display(),
            source.system_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            FILES.map(|(s, _)| s).join(", "),
            data_dir.join(FOLDER).display()
        ),
    };
    let read = |stem: &str, max: usize| -> Result<(PathBuf, Vec<u8>)> {
        let path = find_in(&dir, stem).with_context(|| format!("{}: no {stem}", dir.display()))?;
        let bytes = read_maybe_gz(&path, max)?;
        Ok((path, bytes))
    };
    let mut sets = Vec::new();
    for (split, count) in [("train", source.counts.0), ("t10k", source.counts.1)] {
        let (ip, ib) = read(&format!("{split}-images-idx3-ubyte"), 16 + count * 28 * 28)?;
        let (lp, lb) = read(&format!("{split}-labels-idx1-ubyte"), 8 + count)?;
        sets.push(ImageSet {
            images: parse_images(&ip, &ib, count)?,
            labels: parse_labels(&lp, &lb, count)?,
        });
    }
    let test = sets.pop().unwrap();
    let train = sets.pop().unwrap();
    Ok((train, test, dir))
}
