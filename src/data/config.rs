//! `[data]` of an experiment file: which dataset ([`DatasetName`]), with the options of its
//! family: CIFAR-style tensors ([`TensorOptions`]) or an image folder ([`FolderOptions`], with its
//! test protocols and their geometry); and the shape it gives the networks ([`Shape`]).

use super::cifar100;
use super::folder::Subset;
use super::transform::TrainTransform;
use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The datasets the experiments run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DatasetName {
    #[serde(rename = "cifar10")]
    Cifar10,
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    #[serde(rename = "cifar100")]
    Cifar100,
    /// Your own small images, class per folder, for the CIFAR nets ([`small_folder`]).
    #[serde(rename = "folder")]
    Folder,
    /// ILSVRC-2012 in the image-folder layout (or any folder laid out like it).
    #[serde(rename = "imagenet")]
    ImageNet,
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetName::Cifar10 => "cifar10",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Folder => "folder",
            DatasetName::ImageNet => "imagenet",
        })
    }
}

impl std::str::FromStr for DatasetName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(DatasetName::Cifar10),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetName::FashionMnist),
            "cifar100" | "cifar-100" => Ok(DatasetName::Cifar100),
            "folder" => Ok(DatasetName::Folder),
            "imagenet" => Ok(DatasetName::ImageNet),
            _ => anyhow::bail!(
                "unknown dataset {s:?}: expected cifar10, fashion-mnist, cifar100, folder or imagenet"
            ),
        }
    }
}

impl DatasetName {
    /// How people write it: `CIFAR-10`, `Fashion-MNIST`, `ImageNet`.
    pub fn pretty(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "CIFAR-10",
            DatasetName::FashionMnist => "Fashion-MNIST",
            DatasetName::Cifar100 => "CIFAR-100",
            DatasetName::Folder => "an image folder",
            DatasetName::ImageNet => "ImageNet",
        }
    }
}

/// What a network is sized from: its classes, and its input's channels and side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub classes: usize,
    pub channels: i64,
    pub size: i64,
}

/// `[data]` options of a CIFAR-style (tensor) dataset; the defaults are Sec. 4.2's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TensorOptions {
    /// Pad-crop-flip augmentation.
    pub augment: bool,
    /// Zero padding on each side before the random 32x32 crop.
    pub pad: i64,
    /// Training images held out as a validation set (5000 for the paper's 45k/5k schedule search).
    pub val_split: usize,
    /// Evaluate on the first this many test images only (the quick preset); all when absent.
    pub test_subset: Option<usize>,
    pub eval_batch_size: usize,
    /// CIFAR-100 only: `fine` (100 classes, the default) or `coarse` (20 superclasses) labels.
    pub labels: Option<cifar100::Labels>,
    /// `dataset = "folder"` only: the folder holding `train/<class>/` and `test/<class>/` (or
    /// `val/`), relative to `--data-dir` unless absolute.
    pub path: Option<PathBuf>,
    /// `dataset = "folder"` only: the side its images are brought to (default 32): the shorter
    /// side resized to it, the longer centre-cropped.
    pub image_size: Option<i64>,
}

impl Default for TensorOptions {
    fn default() -> Self {
        TensorOptions {
            augment: true,
            pad: 4,
            val_split: 0,
            test_subset: None,
            eval_batch_size: 1000,
            labels: None,
            path: None,
            image_size: None,
        }
    }
}

/// `[data]` of an experiment file: which dataset, with the options of its family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dataset")]
pub enum DataConfig {
    #[serde(rename = "cifar10")]
    Cifar10(TensorOptions),
    #[serde(rename = "fashion-mnist")]
    FashionMnist(TensorOptions),
    #[serde(rename = "cifar100")]
    Cifar100(TensorOptions),
    #[serde(rename = "folder")]
    Folder(TensorOptions),
    #[serde(rename = "imagenet")]
    ImageNet(FolderOptions),
}

impl DataConfig {
    pub fn dataset(&self) -> DatasetName {
        match self {
            DataConfig::Cifar10(_) => DatasetName::Cifar10,
            DataConfig::FashionMnist(_) => DatasetName::FashionMnist,
            DataConfig::Cifar100(_) => DatasetName::Cifar100,
            DataConfig::Folder(_) => DatasetName::Folder,
            DataConfig::ImageNet(_) => DatasetName::ImageNet,
        }
    }

    /// One of the downloadable tensor datasets (CIFAR-10, CIFAR-100 with fine labels,
    /// Fashion-MNIST) with Sec. 4.2's options.
    pub fn downloadable(name: DatasetName) -> Result<Self> {
        DataConfig::Cifar10(TensorOptions::default()).with_dataset(name)
    }

    /// The options of a CIFAR-style (tensor) dataset; `None` for an ImageNet-style image folder.
    pub fn tensors(&self) -> Option<&TensorOptions> {
        match self {
            DataConfig::Cifar10(o)
            | DataConfig::FashionMnist(o)
            | DataConfig::Cifar100(o)
            | DataConfig::Folder(o) => Some(o),
            DataConfig::ImageNet(_) => None,
        }
    }

    /// The networks' shape for a dataset whose files need not be read to know it (not an image
    /// folder's: its classes and channels come from the files).
    pub fn shape(&self) -> Option<Shape> {
        let (classes, channels, size) = match self {
            DataConfig::Cifar10(_) => (10, 3, 32),
            DataConfig::FashionMnist(_) => (10, 1, 28),
            DataConfig::Cifar100(o) => (o.labels.unwrap_or_default().classes(), 3, 32),
            DataConfig::Folder(_) | DataConfig::ImageNet(_) => return None,
        };
        Some(Shape { classes, channels, size })
    }

    /// The same options on another of the downloadable tensor datasets (`--dataset
    /// fashion-mnist`): CIFAR-10, CIFAR-100 and Fashion-MNIST stand in for each other.
    pub fn with_dataset(self, name: DatasetName) -> Result<Self> {
        let movable = |d: &DataConfig| {
            matches!(d, DataConfig::Cifar10(_) | DataConfig::FashionMnist(_) | DataConfig::Cifar100(_))
        };
        if let (true, Some(o)) = (movable(&self), self.tensors()) {
            let o = TensorOptions { labels: None, ..o.clone() };
            match name {
                DatasetName::Cifar10 => return Ok(DataConfig::Cifar10(o)),
                DatasetName::FashionMnist => return Ok(DataConfig::FashionMnist(o)),
                DatasetName::Cifar100 => return Ok(DataConfig::Cifar100(o)),
                _ => {}
            }
        }
        match (self, name) {
            (d, n) if d.dataset() == n => Ok(d),
            (d, n) => anyhow::bail!(
                "--dataset {n}: the experiment is on {}, and only CIFAR-10, CIFAR-100 and Fashion-MNIST can \
                 stand in for each other",
                d.dataset()
            ),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let Some(o) = self.tensors() else {
            let DataConfig::ImageNet(o) = self else { unreachable!() };
            return o.validate();
        };
        let name = self.dataset();
        ensure!(o.pad >= 0, "data.pad must be >= 0, got {}", o.pad);
        ensure!(o.eval_batch_size > 0, "data.eval_batch_size must be positive");
        ensure!(
            o.labels.is_none() || name == DatasetName::Cifar100,
            "data.labels is for cifar100, not {name}"
        );
        let folder = name == DatasetName::Folder;
        ensure!(
            o.path.is_some() == folder,
            "data.path names the folder of dataset = \"folder\" (and only of it)"
        );
        ensure!(o.image_size.is_none() || folder, "data.image_size is for dataset = \"folder\", not {name}");
        ensure!(o.image_size.is_none_or(|s| (8..=1024).contains(&s)), "data.image_size must be 8..=1024");
        Ok(())
    }

    /// Whether training measures a validation error (the plateau rule needs one): a CIFAR-style
    /// split, or an image folder's `val/`.
    pub fn has_validation(&self) -> bool {
        self.tensors().is_none_or(|o| o.val_split > 0)
    }
}

/// The test protocols of Sec. 3.4 / Tables 2-4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Shorter side 256, the centre 224x224 crop (Figure 4's validation curves).
    Center,
    /// Shorter side 256, the 4 corner and the centre crops, and those of the mirrored image (as
    /// torchvision's TenCrop); softmax averaged (Tables 2 and 3).
    TenCrop,
    /// Fully convolutional: the whole image at shorter sides 224, 256, 384, 480 and 640, and
    /// mirrored; softmax averaged over the 10 (Table 4).
    MultiScale,
}

impl std::str::FromStr for Protocol {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "center" | "centre" => Ok(Protocol::Center),
            "ten-crop" | "10-crop" => Ok(Protocol::TenCrop),
            "multi-scale" => Ok(Protocol::MultiScale),
            _ => bail!("unknown protocol {s:?}: expected center, ten-crop or multi-scale"),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Center => "center",
            Protocol::TenCrop => "ten-crop",
            Protocol::MultiScale => "multi-scale",
        })
    }
}

pub const MULTI_SCALE_SIDES: [u32; 5] = [224, 256, 384, 480, 640];

/// Sizes of the test protocols: the paper's (resize 256, crop 224, scales 224..640) by default; the
/// quick preset scales them down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalGeometry {
    /// Shorter side before the centre and 10 crops.
    pub resize: u32,
    pub crop: u32,
    /// Shorter sides of the multi-scale protocol.
    pub scales: Vec<u32>,
}

impl Default for EvalGeometry {
    fn default() -> Self {
        EvalGeometry { resize: 256, crop: 224, scales: MULTI_SCALE_SIDES.to_vec() }
    }
}

impl EvalGeometry {
    /// Views per image whose softmax `protocol` averages: 1, 10, or 2 per scale.
    pub fn views(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Center => 1,
            Protocol::TenCrop => 10,
            Protocol::MultiScale => 2 * self.scales.len(),
        }
    }
}

/// `[data]` of an image-folder experiment (ImageNet): the subset, the training transform, the
/// validation images of the curves, and the final test protocols.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderOptions {
    /// Classes and training images per class to keep (all by default).
    #[serde(default)]
    pub subset: Subset,
    /// Validation images per class to keep (all by default).
    #[serde(default)]
    pub val_images_per_class: Option<usize>,
    #[serde(default)]
    pub transform: TrainTransform,
    #[serde(default)]
    pub geometry: EvalGeometry,
    /// Validation images (spread over the classes) for the centre-crop error logged during training,
    /// Figure 4's bold curves; the whole validation folder when absent.
    #[serde(default)]
    pub val_images: Option<usize>,
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Protocols of the final evaluation on the whole validation folder.
    pub final_protocols: Vec<Protocol>,
    /// Re-estimate the BN statistics over this many training images before the final evaluation.
    #[serde(default)]
    pub bn_reestimate_images: Option<usize>,
}

fn default_eval_batch() -> usize {
    64
}

impl FolderOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.final_protocols.is_empty(), "data.final_protocols is empty");
        ensure!(self.eval_batch_size > 0, "data.eval_batch_size must be positive");
        let t = &self.transform;
        ensure!(
            t.min_side <= t.max_side && t.crop <= t.min_side,
            "data.transform: need crop <= min_side <= max_side"
        );
        Ok(())
    }

    /// The subset of the validation folder to scan.
    pub fn val_subset(&self) -> Subset {
        Subset { classes: self.subset.classes, images_per_class: self.val_images_per_class }
    }
}
