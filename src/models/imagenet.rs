//! The ImageNet networks of Table 1: a 7x7/2 conv and 3x3/2 max pool, four stages on 56/28/14/7 maps,
//! global average pooling, a 1000-way fc. Plain and residual 18/34 (basic blocks) and 50/101/152
//! (bottlenecks).

use super::blocks::{Block, BottleneckStride, ConvBn, HeInit, Shortcut};
use super::net::{NetPlan, ResNet, Stem};
use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Table 1 as data: depth, blocks per stage, bottleneck or not.
pub const ARCHITECTURES: [(usize, [usize; 4], bool); 5] = [
    (18, [2, 2, 2, 2], false),
    (34, [3, 4, 6, 3], false),
    (50, [3, 4, 6, 3], true),
    (101, [3, 4, 23, 3], true),
    (152, [3, 8, 36, 3], true),
];

/// Output channels of each stage's blocks for basic blocks (bottlenecks have 4x these).
pub const WIDTHS: [i64; 4] = [64, 128, 256, 512];

/// An ImageNet-family network's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageNetNet {
    /// 18, 34, 50, 101 or 152.
    pub depth: usize,
    pub residual: bool,
    /// Table 2 uses A; ResNet-50/101/152 use B.
    #[serde(default)]
    pub shortcut: Shortcut,
    /// Where a bottleneck's stride 2 sits; ignored by basic blocks.
    #[serde(default)]
    pub bottleneck_stride: BottleneckStride,
    #[serde(default = "default_num_classes")]
    pub num_classes: i64,
    /// The convs' He-normal n: fan-in (the authors' release, default) or fan-out (torchvision).
    #[serde(default)]
    pub init: HeInit,
    /// Used for multiply-add counts (the net accepts any size).
    #[serde(default = "default_image_size")]
    pub image_size: i64,
}

fn default_num_classes() -> i64 {
    1000
}
fn default_image_size() -> i64 {
    224
}

impl ImageNetNet {
    pub fn resnet(depth: usize, shortcut: Shortcut) -> Self {
        ImageNetNet {
            depth,
            residual: true,
            shortcut,
            bottleneck_stride: BottleneckStride::FirstConv1x1,
            num_classes: 1000,
            init: HeInit::FanIn,
            image_size: 224,
        }
    }

    pub fn plain(depth: usize) -> Self {
        ImageNetNet { residual: false, ..Self::resnet(depth, Shortcut::A) }
    }

    /// `resnet50` or `plain34` (depth checked when built); residual nets get `shortcut`.
    pub fn from_arch(arch: &str, shortcut: Shortcut) -> anyhow::Result<Self> {
        let (residual, depth) = match (arch.strip_prefix("resnet"), arch.strip_prefix("plain")) {
            (Some(d), _) => (true, d),
            (_, Some(d)) => (false, d),
            _ => anyhow::bail!("{arch}: expected resnet<depth> or plain<depth>, e.g. resnet50"),
        };
        let depth = depth.parse().map_err(|_| anyhow::anyhow!("{arch}: bad depth {depth:?}"))?;
        Ok(if residual { Self::resnet(depth, shortcut) } else { Self::plain(depth) })
    }

    /// torchvision's `resnet18`/`resnet50`...: option B, stride in the 3x3 conv.
    pub fn torchvision(depth: usize) -> Self {
        ImageNetNet { bottleneck_stride: BottleneckStride::Conv3x3, ..Self::resnet(depth, Shortcut::B) }
    }

    /// `plain34`, `resnet34-A`, `resnet50-B` (`resnet50-B-v1.5` with the stride in the 3x3 conv).
    pub fn name(&self) -> String {
        if !self.residual {
            return format!("plain{}", self.depth);
        }
        let mut name = format!("resnet{}-{}", self.depth, self.shortcut);
        if self.is_bottleneck() && self.bottleneck_stride == BottleneckStride::Conv3x3 {
            name.push_str("-v1.5");
        }
        name
    }

    fn architecture(&self) -> Result<([usize; 4], bool)> {
        match ARCHITECTURES.iter().find(|(d, _, _)| *d == self.depth) {
            Some(&(_, blocks, bottleneck)) => Ok((blocks, bottleneck)),
            None => bail!("ImageNet depth {} is not one of 18, 34, 50, 101, 152", self.depth),
        }
    }

    pub fn is_bottleneck(&self) -> bool {
        self.architecture().is_ok_and(|(_, b)| b)
    }

    pub fn validate(&self) -> Result<()> {
        self.architecture()?;
        ensure!(self.num_classes >= 1, "num_classes must be at least 1, got {}", self.num_classes);
        ensure!(
            self.image_size >= 32,
            "image_size {} is too small for an ImageNet net (at least 32)",
            self.image_size
        );
        Ok(())
    }

    /// Builds the network with torchvision's variable names, so torchvision-format weights load.
    pub fn build(&self, p: &nn::Path) -> Result<ResNet> {
        self.validate()?;
        let (blocks_per_stage, bottleneck) = self.architecture()?;
        let shortcut = self.residual.then_some(self.shortcut);
        let expansion = if bottleneck { 4 } else { 1 };
        let stem = Stem::ImageNet(ConvBn::new(&(p / "conv1"), &(p / "bn1"), 3, 64, 7, 2));
        let plan = NetPlan {
            name: self.name(),
            stem,
            stem_channels: 64,
            stages: blocks_per_stage.iter().zip(WIDTHS).map(|(&n, w)| (n, w * expansion)).collect(),
            num_classes: self.num_classes,
            input: (3, self.image_size, self.image_size),
        };
        let placement = self.bottleneck_stride;
        let net = ResNet::assemble(p, plan, |bp, i, o, s| {
            if bottleneck {
                Block::bottleneck(bp, i, o, s, placement, shortcut)
            } else {
                Block::basic(bp, i, o, s, shortcut)
            }
        });
        net.apply_init(self.init);
        Ok(net)
    }
}
