//! The CIFAR-10 networks of Sec. 4.2: depth 6n+2, three stages of 2n 3x3 layers on 32/16/8 maps with
//! 16/32/64 filters, stride-2 convs for downsampling, global average pooling, a 10-way fc.

use super::blocks::{Block, ConvBn, HeInit, Shortcut};
use super::net::{NetPlan, ResNet, Stem};
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Filters per stage.
pub const WIDTHS: [i64; 3] = [16, 32, 64];

/// A CIFAR-family network's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CifarNet {
    /// 6n+2: 20, 32, 44, 56, 110, 1202 in the paper.
    pub depth: usize,
    /// Residual (with shortcuts) or plain (the same layers without).
    pub residual: bool,
    /// Option A in the paper (identity shortcuts everywhere, so plain and residual nets have
    /// exactly the same parameters).
    #[serde(default)]
    pub shortcut: Shortcut,
    /// 3 for CIFAR-10, 1 for Fashion-MNIST.
    #[serde(default = "default_in_channels")]
    pub in_channels: i64,
    /// 32 for CIFAR-10, 28 for Fashion-MNIST; used for multiply-add counts (the net accepts any size).
    #[serde(default = "default_image_size")]
    pub image_size: i64,
    #[serde(default = "default_num_classes")]
    pub num_classes: i64,
    /// The convs' He-normal n: fan-in (the authors' release, default) or fan-out (torchvision).
    #[serde(default)]
    pub init: HeInit,
}

fn default_in_channels() -> i64 {
    3
}
fn default_image_size() -> i64 {
    32
}
fn default_num_classes() -> i64 {
    10
}

impl CifarNet {
    /// ResNet of the given depth for CIFAR-10, option A.
    pub fn resnet(depth: usize) -> Self {
        CifarNet {
            depth,
            residual: true,
            shortcut: Shortcut::A,
            in_channels: 3,
            image_size: 32,
            num_classes: 10,
            init: HeInit::FanIn,
        }
    }

    /// Plain net of the given depth for CIFAR-10.
    pub fn plain(depth: usize) -> Self {
        CifarNet { residual: false, ..Self::resnet(depth) }
    }

    /// `resnet20`, `plain56`, `resnet20-B`.
    pub fn name(&self) -> String {
        let kind = if self.residual { "resnet" } else { "plain" };
        match (self.residual, self.shortcut) {
            (true, Shortcut::B | Shortcut::C) => format!("{kind}{}-{}", self.depth, self.shortcut),
            _ => format!("{kind}{}", self.depth),
        }
    }

    /// Blocks per stage, n, from depth = 6n + 2.
    pub fn blocks_per_stage(&self) -> Result<usize> {
        let d = self.depth;
        ensure!(
            d >= 8 && (d - 2).is_multiple_of(6),
            "CIFAR depth {d} is not of the form 6n+2 with n >= 1 (the paper uses 20, 32, 44, 56, 110, 1202)"
        );
        Ok((d - 2) / 6)
    }

    pub fn validate(&self) -> Result<()> {
        self.blocks_per_stage()?;
        ensure!(self.num_classes >= 1, "num_classes must be at least 1, got {}", self.num_classes);
        ensure!(self.in_channels >= 1, "in_channels must be at least 1, got {}", self.in_channels);
        // Two stride-2 stages must leave at least one position.
        ensure!(
            self.image_size >= 4,
            "image_size {} is too small for a CIFAR net (at least 4)",
            self.image_size
        );
        Ok(())
    }

    /// Builds the network with its variables under `p` (torchvision's names: `conv1`, `bn1`,
    /// `layer1.0.conv1`, ..., `fc`).
    pub fn build(&self, p: &nn::Path) -> Result<ResNet> {
        self.validate()?;
        let n = self.blocks_per_stage()?;
        let shortcut = self.residual.then_some(self.shortcut);
        let stem = Stem::Cifar(ConvBn::new(&(p / "conv1"), &(p / "bn1"), self.in_channels, WIDTHS[0], 3, 1));
        let plan = NetPlan {
            name: self.name(),
            stem,
            stem_channels: WIDTHS[0],
            stages: WIDTHS.iter().map(|&w| (n, w)).collect(),
            num_classes: self.num_classes,
            input: (self.in_channels, self.image_size, self.image_size),
        };
        let net = ResNet::assemble(p, plan, |bp, i, o, s| Block::basic(bp, i, o, s, shortcut));
        net.apply_init(self.init);
        Ok(net)
    }
}
