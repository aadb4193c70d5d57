//! The paper's networks. Each builder takes an `nn::Path` and returns a [`ResNet`] whose variables
//! follow torchvision's names, so weights interoperate (see `tests/torchvision.rs`).
//!
//! ```no_run
//! use resnet_repro::models::{CifarNet, count_parameters};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let net = CifarNet::resnet(20).build(&vs.root()).unwrap();
//! assert_eq!(count_parameters(&vs), 269_722);
//! # let _ = net;
//! ```

pub mod blocks;
pub mod cifar;
pub mod imagenet;
pub mod net;

pub use blocks::{BottleneckStride, Shortcut};
pub use cifar::CifarNet;
pub use imagenet::ImageNetNet;
pub use net::{ResNet, count_parameters, save_weights};

/// Any network of the project.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NetSpec {
    Cifar(CifarNet),
    ImageNet(ImageNetNet),
}

impl NetSpec {
    pub fn name(&self) -> String {
        match self {
            NetSpec::Cifar(c) => c.name(),
            NetSpec::ImageNet(c) => c.name(),
        }
    }

    pub fn depth(&self) -> usize {
        match self {
            NetSpec::Cifar(c) => c.depth,
            NetSpec::ImageNet(c) => c.depth,
        }
    }

    pub fn residual(&self) -> bool {
        match self {
            NetSpec::Cifar(c) => c.residual,
            NetSpec::ImageNet(c) => c.residual,
        }
    }

    pub fn build(&self, p: &tch::nn::Path) -> anyhow::Result<ResNet> {
        match self {
            NetSpec::Cifar(c) => c.build(p),
            NetSpec::ImageNet(c) => c.build(p),
        }
    }
}
