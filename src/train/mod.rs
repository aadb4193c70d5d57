//! Training: one loop for every data family. [`config`] is `[train]`, [`policy`] the learning
//! rate (milestones, warm-up, plateau), [`feed`] where batches come from, [`step`] one update,
//! [`capture`] steps eager or replayed as a CUDA graph, [`trainer`] the loop,
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
pub mod step;
pub mod trainer;

pub use capture::Stepper;
pub use checkpoint::RunFiles;
pub use config::{Layout, Precision, TrainConfig};
pub use feed::{Evaluation, FolderFeed, Staged, TensorFeed, TrainData};
pub use optim::SgdSettings;
pub use step::{Rate, Trainer};
pub use trainer::{TrainJob, TrainOptions, TrainStatus, TrainSummary, train_run};
