//! Every number the paper publishes that the suite compares against, as data keyed by network and
//! protocol: Table 1's multiply-adds, Table 6's parameter counts and test errors, and the ImageNet
//! errors of Tables 2, 3 (10-crop) and 4 (multi-scale), and the detection results of Tables 7-8.
//! Nothing else in the crate holds a published number.

use crate::data::Protocol;
use crate::models::{BottleneckStride, CifarNet, ImageNetNet, NetSpec, Shortcut};
use crate::stats::MeanStd;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a test error is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// CIFAR: the last iteration's weights on the test set, one view per image (Table 6).
    Test,
    /// ImageNet validation, centre crop (Figure 4's curves).
    Center,
    /// ImageNet validation, 10-crop (Tables 2 and 3).
    TenCrop,
    /// ImageNet validation, fully-convolutional multi-scale (Table 4).
    MultiScale,
}

impl From<Protocol> for Measure {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Center => Measure::Center,
            Protocol::TenCrop => Measure::TenCrop,
            Protocol::MultiScale => Measure::MultiScale,
        }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Measure::Test => "test",
            Measure::Center => "center",
            Measure::TenCrop => "ten-crop",
            Measure::MultiScale => "multi-scale",
        })
    }
}

/// A published error (%): top-1 (the best run where the paper ran several), top-5 where given,
/// and the mean and std of several runs where given (ResNet-110).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    pub top1: f64,
    pub top5: Option<f64>,
    pub mean_std: Option<MeanStd>,
}

const fn top1(top1: f64) -> Published {
    Published { top1, top5: None, mean_std: None }
}

const fn top1_5(top1: f64, top5: f64) -> Published {
    Published { top1, top5: Some(top5), mean_std: None }
}

/// The paper's error for a network measured a given way, if it publishes one.
pub fn published(net: &NetSpec, measure: Measure) -> Option<Published> {
    match (net, measure) {
        (NetSpec::Cifar(n), Measure::Test) => table6(n),
        (NetSpec::ImageNet(n), Measure::TenCrop) => tables2_3(n),
        (NetSpec::ImageNet(n), Measure::MultiScale) => table4(n),
        _ => None,
    }
}

/// Table 6: CIFAR-10 test error of the ResNets (option A); no plain-net numbers (Figure 6 only).
/// Whether the data is CIFAR-10 is the caller's to judge (the summaries show the figure beside
/// Fashion-MNIST runs for reference, without a difference).
fn table6(n: &CifarNet) -> Option<Published> {
    if !n.residual || n.shortcut != Shortcut::A {
        return None;
    }
    Some(match n.depth {
        20 => top1(8.75),
        32 => top1(7.51),
        44 => top1(7.17),
        56 => top1(6.97),
        110 => Published { top1: 6.43, top5: None, mean_std: Some(MeanStd { mean: 6.61, std: 0.16 }) },
        1202 => top1(7.93),
        _ => return None,
    })
}

/// Tables 2 and 3: ImageNet validation, 10-crop.
fn tables2_3(n: &ImageNetNet) -> Option<Published> {
    Some(match (n.residual, n.depth, n.shortcut) {
        (false, 18, _) => top1(27.94),
        (false, 34, _) => top1_5(28.54, 10.02),
        (true, 18, Shortcut::A) => top1(27.88),
        (true, 34, Shortcut::A) => top1_5(25.03, 7.76),
        (true, 34, Shortcut::B) => top1_5(24.52, 7.46),
        (true, 34, Shortcut::C) => top1_5(24.19, 7.40),
        (true, 50, Shortcut::B) => top1_5(22.85, 6.71),
        (true, 101, Shortcut::B) => top1_5(21.75, 6.05),
        (true, 152, Shortcut::B) => top1_5(21.43, 5.71),
        _ => return None,
    })
}

/// Table 4: ImageNet validation, single models, multi-scale fully-convolutional testing.
fn table4(n: &ImageNetNet) -> Option<Published> {
    Some(match (n.residual, n.depth, n.shortcut) {
        (true, 34, Shortcut::B) => top1_5(21.84, 5.71),
        (true, 34, Shortcut::C) => top1_5(21.53, 5.60),
        (true, 50, Shortcut::B) => top1_5(20.74, 5.25),
        (true, 101, Shortcut::B) => top1_5(19.87, 4.60),
        (true, 152, Shortcut::B) => top1_5(19.38, 4.49),
        _ => return None,
    })
}

/// Table 1's FLOPs (multiply-adds) for an ImageNet net whose architecture is the paper's: the
/// identity/projection-where-needed nets (options A and B; Fig. 3 for plain-34), with the stride in
/// the bottleneck's first 1x1 conv. Option C (3.831e9 for ResNet-34) and the v1.5 placement
/// (4.089e9 for ResNet-50) differ from Table 1 by more than its rounding, so none is given for them.
pub fn table1_mult_adds(net: &ImageNetNet) -> Option<f64> {
    let paper_arch = !net.residual
        || (net.shortcut != Shortcut::C
            && (!net.is_bottleneck() || net.bottleneck_stride == BottleneckStride::FirstConv1x1));
    let flops = match net.depth {
        18 => 1.8e9,
        34 => 3.6e9,
        50 => 3.8e9,
        101 => 7.6e9,
        152 => 11.3e9,
        _ => return None,
    };
    paper_arch.then_some(flops)
}

/// Table 6's parameter counts for the CIFAR ResNets (option A; plain nets have the same).
pub fn table6_params(net: &CifarNet) -> Option<f64> {
    if !net.residual || net.shortcut != Shortcut::A || net.in_channels != 3 {
        return None;
    }
    Some(match net.depth {
        20 => 0.27e6,
        32 => 0.46e6,
        44 => 0.66e6,
        56 => 0.85e6,
        110 => 1.7e6,
        1202 => 19.4e6,
        _ => return None,
    })
}

/// The recipe's numbers the deviations are measured against (Sec. 3.4 and 4.2).
pub mod recipe {
    /// CIFAR: 64k iterations of batch 128 (164 epochs of 50k images), lr / 10 at 32k and 48k.
    pub const CIFAR_ITERATIONS: u64 = 64_000;
    pub const CIFAR_MILESTONES: [u64; 2] = [32_000, 48_000];
    pub const CIFAR_BATCH: usize = 128;
    /// CIFAR batch norm: two GPUs of 64 images.
    pub const CIFAR_BN_BATCH: usize = 64;
    /// ImageNet: up to 60e4 iterations of batch 256, lr / 10 when the error plateaus.
    pub const IMAGENET_ITERATIONS: u64 = 600_000;
    pub const IMAGENET_BATCH: usize = 256;
    /// ImageNet batch norm: 8 GPUs of 32 images.
    pub const IMAGENET_BN_BATCH: usize = 32;
}

/// A detection result of Tables 7-8: Faster R-CNN with VGG-16 and with ResNet-101 (%).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionResult {
    pub table: &'static str,
    /// Trained on, tested on.
    pub data: &'static str,
    pub metric: &'static str,
    pub vgg16: f64,
    pub resnet101: f64,
}

/// Table 7 (PASCAL VOC, mAP at IoU 0.5) and Table 8 (COCO validation).
pub const DETECTION: [DetectionResult; 4] = [
    DetectionResult {
        table: "7",
        data: "VOC 07+12 trainval, VOC 2007 test",
        metric: "mAP",
        vgg16: 73.2,
        resnet101: 76.4,
    },
    DetectionResult {
        table: "7",
        data: "VOC 07++12, VOC 2012 test",
        metric: "mAP",
        vgg16: 70.4,
        resnet101: 73.8,
    },
    DetectionResult {
        table: "8",
        data: "COCO train, COCO val",
        metric: "mAP@.5",
        vgg16: 41.5,
        resnet101: 48.4,
    },
    DetectionResult {
        table: "8",
        data: "COCO train, COCO val",
        metric: "mAP@[.5, .95]",
        vgg16: 21.2,
        resnet101: 27.2,
    },
];
