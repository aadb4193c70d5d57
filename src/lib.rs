//! resnet-repro: He et al. 2015, *Deep Residual Learning for Image Recognition*, reproduced table by
//! table on tch (libtorch). The modules in layers, arrows pointing down:
//!
//! - [`cli`]: the one flag struct of the experiment binaries (`src/bin/`, thin recipes).
//! - [`report`]: figures and REPORT.md, from the run store alone.
//! - [`experiment`]: one experiment format, one runner, the run store (the only code that knows
//!   `runs/`), summaries beside the paper; [`paper`]: every published number.
//! - [`train`]: the loop, its learning-rate policy, feeds, checkpoints and metrics;
//!   [`eval`]: the test protocols and Figure 7's layer responses; [`data`]: datasets, augmentation,
//!   the ImageNet folder and loader.
//! - [`selftest`]: `doctor --selftest`, the checks a new machine runs first.
//! - [`dist`]: data-parallel training (torchrun's environment, replicas kept in step over c10d).
//! - [`models`]: the CIFAR (6n+2) and ImageNet (18..152) networks, plain and residual, options
//!   A/B/C; [`complexity`]: Table 1's counts.
//! - The floor: [`shim`] (libtorch calls tch lacks), [`env`] (the torch runtime, provenance,
//!   `--device`), [`fsutil`] (atomic, durable files), [`interrupt`] (signals: stop at a
//!   checkpoint, resume), [`stats`] (mean±std, Welch intervals), [`bench`] (timing and baselines
//!   for `bench_*`).

pub mod bench;
pub mod cli;
pub mod complexity;
pub mod data;
pub mod dist;
pub mod env;
pub mod eval;
pub mod experiment;
pub mod fsutil;
pub mod interrupt;
pub mod models;
pub mod paper;
pub mod report;
pub mod selftest;
pub mod shim;
pub mod stats;
pub mod train;
