//! Experiments: one file format for every table ([`config`]), one runner ([`runner`]), the run
//! store that alone knows the `runs/` layout ([`store`]), the summaries beside the paper
//! ([`summary`]), and Figure 7's choice of runs and its measurement ([`figure7`]).

pub mod config;
pub mod figure7;
pub mod runner;
pub mod store;
pub mod summary;

pub use config::{Experiment, Group, Preset, RunConfig, RunSpec};
pub use runner::{Outcome, RunStatus, RunnerOptions, run_experiment};
pub use store::{FinalRecord, RunDir, Runs, Store, StoredRun, Table};
