//! resnet-repro: He et al. 2015, *Deep Residual Learning for Image Recognition*, reproduced table by
//! table on tch (libtorch).
//!
//! - [`models`]: the CIFAR (6n+2) and ImageNet (18..152) networks, plain and residual, options A/B/C.
//! - [`complexity`]: Table 1, parameters and multiply-adds counted from built networks.
//! - [`data`]: CIFAR-10 and Fashion-MNIST loaders, the downloader, batched augmentation.
//! - [`config`], [`schedule`], [`optim`], [`train`], [`checkpoint`], [`metrics`]: training.
//! - [`experiment`]: the CIFAR depth sweep (Table 6) and its summary; [`plot`]: every figure.
//! - [`imagenet_experiment`], [`evaluate`]: Tables 2, 3 and 4 on ImageNet and their test protocols.
//! - [`responses`]: Figure 7's layer responses; [`report`]: REPORT.md, every result beside the paper.
//! - [`bench`]: timing and baseline helpers for the `bench_*` binaries.
//! - [`env`]: what the running libtorch is and can do (the `doctor` binary), `--device`.
//! - [`shim`]: libtorch calls tch does not expose (channels_last, torch.optim.SGD's multi-tensor step).

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod complexity;
pub mod config;
pub mod data;
pub mod env;
pub mod evaluate;
pub mod experiment;
pub mod fsutil;
pub mod imagenet_experiment;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod plot;
pub mod report;
pub mod responses;
pub mod schedule;
pub mod shim;
pub mod train;
