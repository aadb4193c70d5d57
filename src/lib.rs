//! resnet-repro: He et al. 2015, *Deep Residual Learning for Image Recognition*, reproduced table by
//! table on tch (libtorch).
//!
//! - [`models`]: the CIFAR (6n+2) and ImageNet (18..152) networks, plain and residual, options A/B/C.
//! - [`complexity`]: Table 1, parameters and multiply-adds counted from built networks.
//! - [`bench`]: timing and baseline helpers for the `bench_*` binaries.
//! - [`env`]: what the running libtorch is and can do (the `doctor` binary).
//! - [`optim`]: SGD with saveable state, the same operations as torch.optim.SGD.
//! - [`shim`]: libtorch calls tch does not expose (channels_last, torch.optim.SGD's multi-tensor step).

pub mod bench;
pub mod complexity;
pub mod env;
pub mod models;
pub mod optim;
pub mod shim;
