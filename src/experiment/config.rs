//! One experiment file format for every table (`experiments/*.toml`), strictly parsed: the data
//! (`[data]`, with `dataset = "cifar10" | "fashion-mnist" | "imagenet"` and that family's options,
//! the test protocols among them), `[train]`, and the `[[runs]]`. An unknown key, a missing file or
//! a bad value is an error that names it. Each (network, seed) resolves to a [`RunConfig`], saved
//! as `config.toml` in its folder before training starts.

use crate::data::{DataConfig, DatasetName, Shape};
use crate::models::{BottleneckStride, CifarNet, HeInit, ImageNetNet, NetSpec, Shortcut};
use crate::train::policy::Warmup;
use crate::train::{TrainConfig, TrainJob};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// Whether a run reproduces the paper or only exercises the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The paper's recipe.
    #[default]
    Full,
    /// A shortened schedule to try the pipeline on a CPU (experiments/quick.toml: 900 iterations of
    /// batch 64): not a reproduction.
    Quick,
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Full => "full",
            Preset::Quick => "quick",
        })
    }
}

/// Runs that are comparable with each other: one dataset, one preset. Its folder under a table's
/// runs is `<dataset>` for the paper's recipe, `<dataset>-quick` for the quick preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    pub dataset: DatasetName,
    pub preset: Preset,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.preset {
            Preset::Full => write!(f, "{}", self.dataset),
            Preset::Quick => write!(f, "{}-quick", self.dataset),
        }
    }
}

impl std::str::FromStr for Group {
    type Err = anyhow::Error;
    fn from_str(name: &str) -> Result<Self> {
        let (ds, preset) = match name.strip_suffix("-quick") {
            Some(ds) => (ds, Preset::Quick),
            None => (name, Preset::Full),
        };
        match ds.parse() {
            Ok(dataset) => Ok(Group { dataset, preset }),
            Err(_) => bail!("{name:?} is not a run group (<dataset> or <dataset>-quick)"),
        }
    }
}

impl Group {
    /// Whether its numbers stand beside the paper's: the paper's recipe on the paper's dataset.
    pub fn comparable(&self) -> bool {
        self.preset == Preset::Full && matches!(self.dataset, DatasetName::Cifar10 | DatasetName::ImageNet)
    }

    /// `CIFAR-10`, `Fashion-MNIST, quick preset: not a reproduction`.
    pub fn describe(&self) -> String {
        match self.preset {
            Preset::Full => self.dataset.pretty().to_string(),
            Preset::Quick => format!("{}, quick preset: not a reproduction", self.dataset.pretty()),
        }
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
    /// Where a bottleneck's stride sits (image folders only): `1x1` (the paper's release) or `3x3`.
    #[serde(default)]
    pub bottleneck_stride: Option<BottleneckStride>,
    /// Overrides the experiment's `seeds` for this network (5 for ResNet-110 in the paper).
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
    /// Overrides `train.warmup` for this network.
    #[serde(default)]
    pub warmup: Option<Warmup>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// An experiment file: which networks, on which data, trained how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    #[serde(default)]
    pub preset: Preset,
    /// Seeds of every network unless its run says otherwise.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// The convs' He-normal n for every network: `fan_in` (the authors' release) or `fan_out`.
    #[serde(default)]
    pub init: HeInit,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub runs: Vec<RunSpec>,
}

impl Experiment {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("reading experiment file {} (the files are under experiments/)", path.display())
        })?;
        let cfg: Experiment = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.validate().with_context(|| format!("in {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.runs.is_empty(), "no [[runs]]");
        ensure!(!self.seeds.is_empty(), "seeds is empty");
        self.data.validate()?;
        self.train.validate()?;
        ensure!(
            self.train.plateau.is_none() || self.data.has_validation(),
            "train.plateau needs a validation set, and this experiment has none (data.val_split = 0): the \
             test set must never select anything; set data.val_split or remove the plateau rule"
        );
        for r in &self.runs {
            // (Validated at a placeholder shape where the data's is only known from its files.)
            let shape = self.data.shape().unwrap_or(Shape { classes: 1000, channels: 3, size: 224 });
            let net = self.net(r, shape)?;
            net.validate()?;
            if let Some(s) = &r.seeds {
                ensure!(!s.is_empty(), "run {}: seeds is empty", net.name());
            }
            if let Some(w) = &r.warmup {
                w.validate().with_context(|| format!("run {}", net.name()))?;
            }
        }
        Ok(())
    }

    pub fn group(&self) -> Group {
        Group { dataset: self.data.dataset(), preset: self.preset }
    }

    /// The network of a run, for this experiment's data, of `shape` (its classes; a tensor
    /// dataset's channels and side).
    pub fn net(&self, r: &RunSpec, shape: Shape) -> Result<NetSpec> {
        Ok(match &self.data {
            DataConfig::ImageNet(o) => NetSpec::ImageNet(ImageNetNet {
                depth: r.depth,
                residual: r.residual,
                shortcut: r.shortcut,
                bottleneck_stride: r.bottleneck_stride.unwrap_or_default(),
                num_classes: shape.classes as i64,
                image_size: i64::from(o.transform.crop),
                init: self.init,
            }),
            tensors => {
                ensure!(
                    r.bottleneck_stride.is_none(),
                    "bottleneck_stride is for the ImageNet nets; {} has none",
                    tensors.dataset()
                );
                NetSpec::Cifar(CifarNet {
                    depth: r.depth,
                    residual: r.residual,
                    shortcut: r.shortcut,
                    in_channels: shape.channels,
                    image_size: shape.size,
                    num_classes: shape.classes as i64,
                    init: self.init,
                })
            }
        })
    }

    /// Every (network, seed) of the experiment, resolved, for data of `shape` ([`DataConfig::shape`],
    /// or read from an image folder).
    pub fn resolve(&self, shape: Shape) -> Result<Vec<RunConfig>> {
        let mut out = Vec::new();
        for r in &self.runs {
            let mut train = self.train.clone();
            if r.warmup.is_some() {
                train.warmup = r.warmup.clone();
            }
            let net = self.net(r, shape)?;
            for &seed in r.seeds.as_ref().unwrap_or(&self.seeds) {
                out.push(RunConfig {
                    experiment: self.name.clone(),
                    preset: self.preset,
                    seed,
                    net: net.clone(),
                    train: train.clone(),
                    data: self.data.clone(),
                });
            }
        }
        Ok(out)
    }

    /// `--seeds`: every network gets these seeds.
    pub fn set_seeds(&mut self, seeds: &[u64]) {
        self.seeds = seeds.to_vec();
        self.runs.iter_mut().for_each(|r| r.seeds = None);
    }
}

/// Everything that determines one training run; saved as `config.toml` in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub experiment: String,
    pub preset: Preset,
    pub seed: u64,
    pub net: NetSpec,
    pub train: TrainConfig,
    pub data: DataConfig,
}

impl RunConfig {
    pub fn group(&self) -> Group {
        Group { dataset: self.data.dataset(), preset: self.preset }
    }

    /// `resnet20 seed0`.
    pub fn label(&self) -> String {
        self.job().label()
    }

    /// The run as the trainer sees it.
    pub fn job(&self) -> TrainJob<'_> {
        TrainJob { net: &self.net, train: &self.train, seed: self.seed }
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }
}

/// What differs between two `config.toml` texts, key by key: `` `train.lr = 0.1` there, `train.lr
/// = 0.2` here ``, `` `…` there only ``, `` `…` here only ``.
pub fn describe_difference(theirs: &str, ours: &str) -> String {
    let (a, b) = (flatten(theirs), flatten(ours));
    let mut parts = Vec::new();
    for (key, there) in &a {
        match b.iter().find(|(k, _)| k == key) {
            Some((_, here)) if here == there => {}
            Some((_, here)) => parts.push(format!("`{key} = {there}` there, `{key} = {here}` here")),
            None => parts.push(format!("`{key} = {there}` there only")),
        }
    }
    for (key, here) in b.iter().filter(|(k, _)| !a.iter().any(|(j, _)| j == k)) {
        parts.push(format!("`{key} = {here}` here only"));
    }
    if parts.is_empty() { "different fields".into() } else { parts.join("; ") }
}

/// A TOML document's values by their table-qualified keys (`data.transform.crop`), in the order
/// they appear; an unparsable text has none.
fn flatten(text: &str) -> Vec<(String, toml::Value)> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                v => out.push((key, v.clone())),
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = text.parse::<toml::Table>() {
        walk("", &t, &mut out);
    }
    out
}
