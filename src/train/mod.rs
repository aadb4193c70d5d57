//! Training: one loop for every data family. [`config`] is `[train]`, [`policy`] the learning
//! rate (milestones, warm-up, plateau), [`feed`] where batches come from, [`trainer`] the loop,
//! [`progress`] its cadence and display, [`checkpoint`], [`metrics`] and [`optim`] what it saves
//! and how it updates.

pub mod capture;
pub mod checkpoint;
pub mod config;
pub mod feed;
pub mod metrics;
pub mod optim;
pub mod policy;
pub mod progress;
pub mod trainer;

pub use capture::Stepper;
pub use config::{Layout, Precision, TrainConfig};
pub use feed::{Evaluation, FolderFeed, Staged, TensorFeed, TrainData};
pub use trainer::{Rate, RunFiles, TrainJob, TrainOptions, TrainStatus, TrainSummary, Trainer, train_run};
