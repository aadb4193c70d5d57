//! resnet-repro: He et al. 2015, *Deep Residual Learning for Image Recognition*, reproduced table by
//! table on tch (libtorch). The modules are layered, arrows pointing down (binaries; `cli`, `report`;
//! `experiment`; `train`, `eval`, `data`; `models`, `detect`, `dist`; `shim` and the floor): the layout, module
//! by module, is in docs/architecture.md.

pub mod bench;
pub mod cli;
pub mod data;
pub mod detect;
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
