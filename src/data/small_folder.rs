//! Your own small images for the CIFAR nets (`dataset = "folder"`, `path = "..."` in `[data]`): a
//! class-per-folder tree, `train/<class>/*` and `test/<class>/*` (or `val/`), of images of any size
//! in any format the loader reads (PNG, JPEG, BMP, PNM, TIFF, WebP). Each is brought to
//! `image_size` x `image_size` (default 32): its shorter side resized to that (bilinear, with
//! antialiasing, as PIL resizes), the longer one centre-cropped. The channels come from the files:
//! 1 if every training image is grey, else 3 (grey images replicated). From there the images are
//! tensors like CIFAR's: the training split's per-pixel mean subtracted, the same augmentation.
//! Classes are the sorted folder names; a file that cannot be read is an error naming it.

use super::ImageSet;
use crate::data::folder::{ImageFolder, Subset, decode};
use crate::data::transform::{five_crop_origins, resize_region, resized_size};
use anyhow::{Context, Result, ensure};
use fast_image_resize::Resizer;
use image::DynamicImage;
use rayon::prelude::*;
use std::path::Path;
use tch::{Kind, Tensor};

/// The side images are brought to unless `image_size` says otherwise: CIFAR's.
pub const DEFAULT_SIZE: i64 = 32;

/// A small-image folder, loaded.
pub struct SmallFolder {
    pub train: ImageSet,
    pub test: ImageSet,
    pub classes: Vec<String>,
}

/// Loads `root/train` and `root/test` (or `root/val`) at `size` x `size`.
pub fn load(root: &Path, size: i64) -> Result<SmallFolder> {
    ensure!(
        root.is_dir(),
        "{}: not a folder (dataset = \"folder\" reads <path>/train/<class>/* and <path>/test/<class>/* or val/; \
         path is relative to --data-dir)",
        root.display()
    );
    let train = ImageFolder::scan(&root.join("train"), Subset::default())?;
    let test_dir =
        ["test", "val"].map(|d| root.join(d)).into_iter().find(|d| d.is_dir()).with_context(|| {
            format!("{}: neither test/ nor val/ (the images the error is measured on)", root.display())
        })?;
    let test = ImageFolder::scan(&test_dir, Subset::default())?;
    test.check_same_classes(&train)?;
    let size = u32::try_from(size).context("image_size")?;
    let train_images = shrink_all(&train, size)?;
    let channels = if train_images.iter().all(|(_, grey)| *grey) { 1 } else { 3 };
    let test_images = shrink_all(&test, size)?;
    Ok(SmallFolder {
        train: image_set(&train, &train_images, channels, size),
        test: image_set(&test, &test_images, channels, size),
        classes: train.classes,
    })
}

/// Every image of `folder` at `size` x `size`, RGB (HWC), and whether its file was grey.
fn shrink_all(folder: &ImageFolder, size: u32) -> Result<Vec<(Vec<u8>, bool)>> {
    folder
        .samples
        .par_iter()
        .map_init(Resizer::new, |resizer, (path, _)| {
            let img = decode(path)?;
            Ok((
                shrink(&img, size, resizer).with_context(|| format!("resizing {}", path.display()))?,
                is_grey(&img),
            ))
        })
        .collect()
}

fn image_set(folder: &ImageFolder, images: &[(Vec<u8>, bool)], channels: i64, size: u32) -> ImageSet {
    let pixels: Vec<u8> = images.iter().flat_map(|(rgb, _)| to_chw(rgb, channels)).collect();
    let labels: Vec<i64> = folder.samples.iter().map(|(_, c)| i64::from(*c)).collect();
    let side = i64::from(size);
    ImageSet {
        images: Tensor::from_slice(&pixels).view([labels.len() as i64, channels, side, side]),
        labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
    }
}

/// Whether an image has one colour channel (grey, with or without alpha).
pub fn is_grey(img: &DynamicImage) -> bool {
    !img.color().has_color()
}

/// `img` at `size` x `size`: the shorter side resized to `size`, the longer centre-cropped; RGB,
/// HWC.
pub fn shrink(img: &DynamicImage, size: u32, resizer: &mut Resizer) -> Result<Vec<u8>> {
    let rgb = img.to_rgb8();
    let (rw, rh) = resized_size(rgb.width(), rgb.height(), size);
    let (x, y) = five_crop_origins(rw, rh, size)[4];
    resize_region(&rgb, (rw, rh), (x, y, size, size), resizer)
}

/// RGB HWC pixels as `channels` (1: ITU-R 601 luma, as PIL's `convert("L")`; 3: as they are) CHW.
pub fn to_chw(rgb: &[u8], channels: i64) -> Vec<u8> {
    let n = rgb.len() / 3;
    if channels == 1 {
        return rgb
            .chunks_exact(3)
            .map(|p| {
                ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114 + 500) / 1000) as u8
            })
            .collect();
    }
    (0..3).flat_map(|c| (0..n).map(move |i| rgb[i * 3 + c])).collect()
}
