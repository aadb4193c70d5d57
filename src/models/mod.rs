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
