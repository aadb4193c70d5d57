//! Experiments: one file format for every table ([`config`]), one runner ([`runner`]), the run
//! store that alone knows the `runs/` layout ([`store`]), the summaries beside the paper
//! ([`summary`]) and the paper's findings computed from them ([`findings`]), Figure 7's choice
//! of runs and its measurement ([`figure7`]), and the cross-check of whole training runs against
//! plain PyTorch ([`crosscheck`]); Faster R-CNN on Fashion-MNIST scenes, Tables 7-8 at small
//! scale ([`detect_scenes`]), and on PASCAL VOC and COCO at full size ([`detect_paper`]).

pub mod config;
pub mod crosscheck;
pub mod detect_paper;
pub mod detect_scenes;
pub mod estimate;
pub mod figure7;
pub mod findings;
pub mod predict;
pub mod recipe;
pub mod record;
pub mod release;
pub mod runner;
pub mod store;
pub mod summary;
pub mod table1;

pub use config::{Experiment, Group, Preset, RunConfig, RunSpec};
pub use record::FinalRecord;
pub use release::Release;
pub use runner::{Outcome, RunPick, RunStatus, RunnerOptions, run_experiment};
pub use store::{CrosscheckDirs, Draw, RunDir, Runs, Store, StoredRun, Swap, Table};
