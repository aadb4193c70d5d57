//! Typed experiment configuration, strictly parsed from TOML (`experiments/*.toml`): an unknown key,
//! a missing file or a bad value is an error that names it. Each run's resolved configuration is
//! written next to its results before training starts.

use crate::data::DatasetName;
use crate::models::{CifarNet, Shortcut};
use crate::schedule::{Plateau, Schedule, Warmup};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Whether a run reproduces the paper or only exercises the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The paper's recipe.
    #[default]
    Full,
    /// A few iterations to try the pipeline on a CPU: not a reproduction.
    Quick,
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Preset::Full => "full",
            Preset::Quick => "quick",
        })
    }
}

/// Memory layout for training: `auto` is channels_last on the CPU (oneDNN is ~1.3x faster with it,
/// see `make bench`) and PyTorch's default layout on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    #[default]
    Auto,
    Contiguous,
    ChannelsLast,
}

impl Layout {
    pub fn resolve(self, device: tch::Device) -> crate::shim::MemoryFormat {
        use crate::shim::MemoryFormat;
        match (self, device) {
            (Layout::Contiguous, _) => MemoryFormat::Contiguous,
            (Layout::ChannelsLast, _) => MemoryFormat::ChannelsLast,
            (Layout::Auto, tch::Device::Cpu) => MemoryFormat::ChannelsLast,
            (Layout::Auto, _) => MemoryFormat::Contiguous,
        }
    }
}

/// How one network is trained (Sec. 4.2's recipe by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Iterations after which the rate is multiplied by `lr_decay`.
    pub milestones: Vec<u64>,
    pub lr_decay: f64,
    pub iterations: u64,
    pub warmup: Option<Warmup>,
    /// Also divide the rate when the error plateaus (ImageNet, Sec. 3.4).
    pub plateau: Option<Plateau>,
    /// Pad-crop-flip augmentation (CIFAR).
    pub augment: bool,
    /// Zero padding on each side before the random crop (CIFAR).
    pub pad: i64,
    /// Training images held out as a validation set (5000 for the paper's 45k/5k schedule search).
    pub val_split: usize,
    /// A metrics row every this many iterations.
    pub log_every: u64,
    /// Test (and validation) error every this many iterations; a multiple of `log_every`.
    pub eval_every: u64,
    /// A checkpoint every this many iterations; a multiple of `log_every`.
    pub checkpoint_every: u64,
    pub eval_batch_size: usize,
    /// Evaluate on the first this many test images only (CIFAR's quick preset); all when absent.
    pub test_subset: Option<usize>,
    pub layout: Layout,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            milestones: vec![32_000, 48_000],
            lr_decay: 0.1,
            iterations: 64_000,
            warmup: None,
            plateau: None,
            augment: true,
            pad: 4,
            val_split: 0,
            log_every: 100,
            eval_every: 400,
            checkpoint_every: 2_000,
            eval_batch_size: 1_000,
            test_subset: None,
            layout: Layout::Auto,
        }
    }
}

impl TrainConfig {
    pub fn schedule(&self) -> Schedule {
        Schedule {
            lr: self.lr,
            milestones: self.milestones.clone(),
            decay: self.lr_decay,
            warmup: self.warmup.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.batch_size > 0, "train.batch_size must be positive");
        ensure!(self.iterations > 0, "train.iterations must be positive");
        ensure!(self.lr > 0.0 && self.lr.is_finite(), "train.lr must be positive, got {}", self.lr);
        ensure!(
            (0.0..1.0).contains(&self.momentum),
            "train.momentum must be in [0, 1), got {}",
            self.momentum
        );
        ensure!(self.weight_decay >= 0.0, "train.weight_decay must be >= 0, got {}", self.weight_decay);
        ensure!(self.pad >= 0, "train.pad must be >= 0, got {}", self.pad);
        ensure!(
            self.milestones.windows(2).all(|w| w[0] < w[1]),
            "train.milestones must increase: {:?}",
            self.milestones
        );
        ensure!(self.log_every > 0, "train.log_every must be positive");
        for (name, v) in [("eval_every", self.eval_every), ("checkpoint_every", self.checkpoint_every)] {
            ensure!(
                v > 0 && v % self.log_every == 0,
                "train.{name} ({v}) must be a positive multiple of train.log_every ({})",
                self.log_every
            );
        }
        ensure!(self.eval_batch_size > 0, "train.eval_batch_size must be positive");
        if let Some(p) = &self.plateau {
            ensure!(p.patience > 0, "plateau.patience must be positive");
        }
        if let Some(w) = &self.warmup {
            ensure!(w.lr > 0.0, "warmup.lr must be positive, got {}", w.lr);
            ensure!(w.check_every > 0, "warmup.check_every must be positive");
            ensure!(
                (0.0..=100.0).contains(&w.until_train_error_below),
                "warmup.until_train_error_below is a percentage, got {}",
                w.until_train_error_below
            );
        }
        Ok(())
    }
}

/// One network of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub depth: usize,
    pub residual: bool,
    #[serde(default)]
    pub shortcut: Shortcut,
    /// Overrides the experiment's `seeds` for this network (5 for ResNet-110 in the paper).
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    /// Overrides `train.warmup` for this network.
    #[serde(default)]
    pub warmup: Option<Warmup>,
}

/// An experiment file: which networks, on which data, trained how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    #[serde(default)]
    pub preset: Preset,
    pub dataset: DatasetName,
    /// Seeds of every network unless its run says otherwise.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub train: TrainConfig,
    pub runs: Vec<RunSpec>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

impl ExperimentConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("reading experiment file {} (the files are under experiments/)", path.display())
        })?;
        let cfg: ExperimentConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.validate().with_context(|| format!("in {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.runs.is_empty(), "no [[runs]]");
        ensure!(!self.seeds.is_empty(), "seeds is empty");
        self.train.validate()?;
        for r in &self.runs {
            self.net(r).validate()?;
            if let Some(s) = &r.seeds {
                ensure!(!s.is_empty(), "run depth {}: seeds is empty", r.depth);
            }
        }
        Ok(())
    }

    /// The network of a run, for this experiment's dataset.
    pub fn net(&self, r: &RunSpec) -> CifarNet {
        let (in_channels, image_size) = self.dataset.shape();
        CifarNet {
            depth: r.depth,
            residual: r.residual,
            shortcut: r.shortcut,
            in_channels,
            image_size,
            num_classes: 10,
        }
    }

    /// Every (network, seed) of the experiment, resolved.
    pub fn resolve(&self) -> Vec<RunConfig> {
        let mut out = Vec::new();
        for r in &self.runs {
            let mut train = self.train.clone();
            if r.warmup.is_some() {
                train.warmup = r.warmup.clone();
            }
            for &seed in r.seeds.as_ref().unwrap_or(&self.seeds) {
                out.push(RunConfig {
                    experiment: self.name.clone(),
                    preset: self.preset,
                    dataset: self.dataset,
                    seed,
                    net: self.net(r),
                    train: train.clone(),
                });
            }
        }
        out
    }
}

/// Everything that determines one training run; saved as `config.toml` in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub experiment: String,
    pub preset: Preset,
    pub dataset: DatasetName,
    pub seed: u64,
    pub net: CifarNet,
    pub train: TrainConfig,
}

impl RunConfig {
    /// `<dataset>[-quick]`: runs of one group are comparable with each other.
    pub fn group(&self) -> String {
        group_name(self.dataset, self.preset)
    }

    /// `<out>/<group>/<net>/seed<k>`
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join(self.group()).join(self.net.name()).join(format!("seed{}", self.seed))
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

pub fn group_name(dataset: DatasetName, preset: Preset) -> String {
    group_name_str(&dataset.to_string(), preset)
}

/// `<dataset>` for the paper's recipe, `<dataset>-quick` for the quick preset.
pub fn group_name_str(dataset: &str, preset: Preset) -> String {
    match preset {
        Preset::Full => dataset.to_string(),
        Preset::Quick => format!("{dataset}-quick"),
    }
}

/// Reads the group name back: (dataset, preset).
pub fn parse_group(name: &str) -> Result<(DatasetName, Preset)> {
    let (ds, preset) = match name.strip_suffix("-quick") {
        Some(ds) => (ds, Preset::Quick),
        None => (name, Preset::Full),
    };
    match ds.parse() {
        Ok(d) => Ok((d, preset)),
        Err(_) => bail!("{name:?} is not a run group (<dataset> or <dataset>-quick)"),
    }
}
