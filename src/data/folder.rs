//! An image folder in ImageNet's layout, `train/<class>/*` and `val/<class>/*`: the class index
//! from the sorted folder names, and decoding as torchvision does (any mode to RGB, the format
//! sniffed from the bytes).

use anyhow::{Context, Result, bail, ensure};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File endings torchvision's ImageFolder accepts (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// Keep a part of the dataset, to try the pipeline on a small subset first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    /// The first this many classes (in sorted order); all when absent.
    pub classes: Option<usize>,
    /// The first this many images (in sorted order) of each class; all when absent.
    pub images_per_class: Option<usize>,
}

/// One split of an image folder: classes from the sorted sub-folder names, images sorted within each.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Class names (wnids), sorted; a class's index is its position.
    pub classes: Vec<String>,
    pub samples: Vec<(PathBuf, u32)>,
}

impl ImageFolder {
    pub fn scan(root: &Path, subset: Subset) -> Result<Self> {
        ensure!(
            root.is_dir(),
            "{}: not a folder (expected <data-dir>/train/<wnid>/*.JPEG and val/<wnid>/*.JPEG)",
            root.display()
        );
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .with_context(|| format!("listing {}", root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if let Some(k) = subset.classes {
            classes.truncate(k);
        }
        ensure!(!classes.is_empty(), "{}: no class folders", root.display());
        let mut samples = Vec::new();
        for (index, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("listing {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            files.sort();
            if let Some(k) = subset.images_per_class {
                files.truncate(k);
            }
            ensure!(
                !files.is_empty(),
                "{}: no images (endings {})",
                dir.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
            samples.extend(files.into_iter().map(|f| (f, index as u32)));
        }
        Ok(ImageFolder { root: root.to_path_buf(), classes, samples })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// A validation folder must have the training folder's classes, in the same order.
    pub fn check_same_classes(&self, train: &ImageFolder) -> Result<()> {
        if self.classes != train.classes {
            let missing: Vec<&String> =
                train.classes.iter().filter(|c| !self.classes.contains(c)).take(5).collect();
            let extra: Vec<&String> =
                self.classes.iter().filter(|c| !train.classes.contains(c)).take(5).collect();
            bail!(
                "{} has {} classes and {} has {}; they must be the same (missing from validation: {missing:?}; \
                 not in training: {extra:?})",
                self.root.display(),
                self.classes.len(),
                train.root.display(),
                train.classes.len()
            );
        }
        Ok(())
    }

    /// Writes `index,class` lines (the class index a run used) to `path`.
    pub fn write_class_index(&self, path: &Path) -> Result<()> {
        let mut text = String::from("index,class\n");
        for (i, c) in self.classes.iter().enumerate() {
            text.push_str(&format!("{i},{c}\n"));
        }
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// Decodes an image file to 8-bit RGB as torchvision's loader (PIL `convert("RGB")`) does: the
/// format is read from the bytes, not the name (a PNG named .JPEG decodes), grey images are
/// replicated, alpha dropped, CMYK converted.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    Ok(decode(path)?.to_rgb8())
}

/// Decodes an image file as it is (its own colour type), the format read from the bytes.
pub fn decode(path: &Path) -> Result<image::DynamicImage> {
    let reader = image::ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?;
    // The decoder's message alone: its source repeats the last part of it.
    let img =
        reader.decode().map_err(|e| anyhow::anyhow!("{}: not a decodable image: {e}", path.display()))?;
    ensure!(img.width() > 0 && img.height() > 0, "{}: empty image", path.display());
    Ok(img)
}

/// The ImageNet root: `<dir>` with `train/` and `val/`, or `<dir>/imagenet` with them.
pub fn locate_root(dir: &Path) -> Result<PathBuf> {
    for root in [dir.to_path_buf(), dir.join("imagenet")] {
        if root.join("train").is_dir() && root.join("val").is_dir() {
            return Ok(root);
        }
    }
    anyhow::bail!(
        "no ImageNet folder at {}: expected {0}/train/<wnid>/*.JPEG and {0}/val/<wnid>/*.JPEG (val sorted into \
         class folders, as torchvision's ImageFolder wants); pass --data-dir (make: DATA_DIR=) to your \
         ILSVRC-2012 copy, or make a small sample with `cargo run --release --bin export_imagefolder`",
        dir.display()
    )
}
