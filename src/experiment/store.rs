//! The run store: the only code that knows the `runs/` layout.
//!
//! ```text
//! runs/<table>/<group>/<net>/seed<k>/   one run (group: <dataset> or <dataset>-quick)
//!     config.toml                       its resolved configuration, written before training
//!     metrics.csv                       a row every log_every iterations
//!     ckpt-<iteration>/                 the two newest checkpoints (weights, momentum, state)
//!     model.safetensors, final.json     the final weights and record (final.json marks it done)
//!     eval-<protocol>.json              final evaluations (image folders)
//!     class_index.csv                   the class of each output
//!     data_mean.safetensors             the inputs' per-pixel mean (CIFAR-style data)
//! runs/<table>/summary.{csv,md}         the table beside the paper
//! runs/<table>/findings.md               the paper's findings across depth, computed from the runs
//! runs/fig7/responses.csv, runs/table1/table1.csv
//! runs/crosscheck/ours-<init>/          the cross-check's runs (a store), and PyTorch's beside them:
//! runs/crosscheck/pytorch-<init>/<net>/seed<k>/metrics.csv, runs/crosscheck/{curves.csv,summary.md}
//! runs/crosscheck/draws-<init>/<net>/seed<k>/{init,plan}.safetensors   our draws, for --swap, and
//! runs/crosscheck/pytorch-<init>-with-our-<draws>/..., curves-with-our-<draws>.csv, summary-...md
//! ```

use super::config::{Group, RunConfig};
use super::record::FinalRecord;
use crate::data::Protocol;
use crate::eval::EvalResult;
use crate::fsutil::{FileLock, subdirs, write_atomic};
use crate::models::{HeInit, ResNet, load_net};
use crate::shim::MemoryFormat;
use crate::train::metrics::{MetricsRow, read_metrics};
use crate::train::{RunFiles, checkpoint};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use tch::{Device, nn};

/// The names of a run folder's files, written out here only (a checkpoint folder's inside is
/// [`crate::train::checkpoint`]'s).
pub mod run_file {
    pub const CONFIG: &str = "config.toml";
    pub const METRICS: &str = "metrics.csv";
    pub const FINAL: &str = "final.json";
    pub const WEIGHTS: &str = "model.safetensors";
    pub const CLASS_INDEX: &str = "class_index.csv";
    pub const DATA_MEAN: &str = "data_mean.safetensors";
}

/// The tables and figures with a folder under `runs/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Table1,
    /// Table 2 and Figure 4.
    Table2,
    /// Tables 3 and 4.
    Table3,
    /// Table 6 and Figures 1 and 6.
    Table6,
    Figure7,
    /// The cross-check against plain PyTorch.
    Crosscheck,
    /// Faster R-CNN on scenes of Fashion-MNIST items (Tables 7-8 at small scale).
    DetectScenes,
}

impl Table {
    pub fn dir_name(self) -> &'static str {
        match self {
            Table::Table1 => "table1",
            Table::Table2 => "table2",
            Table::Table3 => "table3",
            Table::Table6 => "table6",
            Table::Figure7 => "fig7",
            Table::Crosscheck => "crosscheck",
            Table::DetectScenes => "detect_scenes",
        }
    }
}

/// `runs/`: every table's folder.
#[derive(Debug, Clone)]
pub struct Runs {
    pub root: PathBuf,
}

impl Runs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runs { root: root.into() }
    }

    /// The store of a table's training runs.
    pub fn table(&self, t: Table) -> Store {
        Store::new(self.root.join(t.dir_name()))
    }

    /// Figure 7's measurements.
    pub fn responses_csv(&self) -> PathBuf {
        self.root.join(Table::Figure7.dir_name()).join("responses.csv")
    }

    /// Table 1's counts.
    pub fn table1_csv(&self) -> PathBuf {
        self.root.join(Table::Table1.dir_name()).join("table1.csv")
    }
}

/// Which of our random draws the cross-check's PyTorch side trains with instead of its own
/// (`crosscheck --swap`): our initial weights, our data stream (each epoch's order, crops and
/// flips), or both. Swapping one at a time says which one a gap between the two sides comes from;
/// with both, the two sides compute the same thing (bit for bit in NCHW).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swap {
    pub init: bool,
    pub data: bool,
}

/// One of our random draws (`crosscheck --swap init,data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Draw {
    /// The initial weights.
    Init,
    /// The data stream: each epoch's order, crops and flips.
    Data,
}

impl Swap {
    /// The draws `swapped` names.
    pub fn of(swapped: &[Draw]) -> Self {
        Swap { init: swapped.contains(&Draw::Init), data: swapped.contains(&Draw::Data) }
    }

    pub fn any(self) -> bool {
        self.init || self.data
    }

    /// `init`, `data`, `init,data` (bench/pytorch_crosscheck.py's --swap), or empty.
    pub fn arg(self) -> String {
        [(self.init, "init"), (self.data, "data")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, s)| *s)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `""`, `-with-our-init`, `-with-our-data`, `-with-our-init-data`: the suffix of the PyTorch
    /// side's folder, the curves, the summary and the figures.
    pub fn suffix(self) -> String {
        if self.any() { format!("-with-our-{}", self.arg().replace(',', "-")) } else { String::new() }
    }
}

/// The cross-check's folders under its root (`runs/crosscheck`), for one choice of swapped draws.
#[derive(Debug, Clone)]
pub struct CrosscheckDirs {
    pub root: PathBuf,
    pub swap: Swap,
}

impl CrosscheckDirs {
    /// Our runs with one init, a store of their own.
    pub fn ours(&self, init: HeInit) -> Store {
        Store::new(self.root.join(format!("ours-{init}")))
    }

    /// Where bench/pytorch_crosscheck.py writes the same runs in plain PyTorch.
    pub fn pytorch(&self, init: HeInit) -> PathBuf {
        self.root.join(format!("pytorch-{init}{}", self.swap.suffix()))
    }

    /// Our runs' draws with one init: `<net>/seed<k>/{init,plan}.safetensors`.
    pub fn draws(&self, init: HeInit) -> PathBuf {
        self.root.join(format!("draws-{init}"))
    }

    /// PyTorch's runs with one init: (net, seed, metrics.csv) for each finished one.
    pub fn pytorch_runs(&self, init: HeInit) -> Result<Vec<(String, u64, PathBuf)>> {
        let mut out = Vec::new();
        for net in subdirs(&self.pytorch(init))? {
            for seed_dir in subdirs(&net)? {
                let name = |p: &Path| p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let seed = name(&seed_dir).strip_prefix("seed").and_then(|s| s.parse().ok());
                let metrics = seed_dir.join(run_file::METRICS);
                if let (Some(seed), true) = (seed, metrics.is_file()) {
                    out.push((name(&net), seed, metrics));
                }
            }
        }
        Ok(out)
    }

    pub fn curves_csv(&self) -> PathBuf {
        self.root.join(format!("curves{}.csv", self.swap.suffix()))
    }

    pub fn summary_md(&self) -> PathBuf {
        self.root.join(format!("summary{}.md", self.swap.suffix()))
    }
}

/// One table's runs (`runs/table6`, or wherever `--out` points).
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// A run found in the store, with its configuration.
#[derive(Debug, Clone)]
pub struct StoredRun {
    pub dir: RunDir,
    pub config: RunConfig,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    /// The folder of a run: `<root>/<group>/<net>/seed<k>`.
    pub fn run(&self, cfg: &RunConfig) -> RunDir {
        let path =
            self.root.join(cfg.group().to_string()).join(cfg.net.name()).join(format!("seed{}", cfg.seed));
        RunDir { path }
    }

    pub fn summary_csv(&self) -> PathBuf {
        self.root.join("summary.csv")
    }

    pub fn summary_md(&self) -> PathBuf {
        self.root.join("summary.md")
    }

    /// The paper's findings across depth, computed from the runs.
    pub fn findings_md(&self) -> PathBuf {
        self.root.join("findings.md")
    }

    /// Figure 7's measurements beside this table (`<root>/../fig7/responses.csv`).
    pub fn responses_csv(&self) -> PathBuf {
        Runs::new(self.root.parent().unwrap_or(Path::new("."))).responses_csv()
    }

    /// Every run with a configuration, by group, then in the paper's row order (plain before
    /// residual, by depth and shortcut option), then by seed. A folder whose `config.toml` this
    /// version cannot read is named on stderr and left out.
    pub fn runs(&self) -> Result<Vec<StoredRun>> {
        let mut out = Vec::new();
        for group_dir in subdirs(&self.root)? {
            let name = group_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if name.parse::<Group>().is_err() {
                continue;
            }
            for seed_dir in subdirs(&group_dir)?.iter().flat_map(|net| subdirs(net).unwrap_or_default()) {
                let dir = RunDir { path: seed_dir };
                if !dir.config_path().is_file() {
                    continue;
                }
                match dir.config() {
                    Ok(config) => out.push(StoredRun { dir, config }),
                    Err(e) => eprintln!("left out {}: {e:#}", dir.path.display()),
                }
            }
        }
        out.sort_by_key(|r| (r.config.group(), r.config.net.order_key(), r.config.seed));
        Ok(out)
    }

    /// [`Store::runs`], grouped.
    pub fn groups(&self) -> Result<Vec<(Group, Vec<StoredRun>)>> {
        let mut groups: Vec<(Group, Vec<StoredRun>)> = Vec::new();
        for run in self.runs()? {
            match groups.last_mut() {
                Some((g, runs)) if *g == run.config.group() => runs.push(run),
                _ => groups.push((run.config.group(), vec![run])),
            }
        }
        Ok(groups)
    }
}

/// One run's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn config_path(&self) -> PathBuf {
        self.path.join(run_file::CONFIG)
    }

    pub fn config(&self) -> Result<RunConfig> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `config.toml` for a new run, or checks that the folder holds this run (any kind of
    /// run: a classification [`RunConfig`], a detection run's).
    pub fn claim<C>(&self, cfg: &C) -> Result<()>
    where
        C: serde::Serialize + serde::de::DeserializeOwned + PartialEq,
    {
        let path = self.config_path();
        let ours = toml::to_string(cfg)?;
        if path.exists() {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            if toml::from_str::<C>(&text).ok().as_ref() != Some(cfg) {
                bail!(
                    "{} holds a run with another configuration than this one ({}); delete that folder to start \
                     afresh, or pass --out to write elsewhere",
                    self.path.display(),
                    super::config::describe_difference(&text, &ours)
                );
            }
            return Ok(());
        }
        std::fs::create_dir_all(&self.path).with_context(|| format!("creating {}", self.path.display()))?;
        write_atomic(&path, ours.as_bytes())
    }

    /// Where the trainer writes.
    pub fn files(&self) -> RunFiles {
        RunFiles {
            metrics: self.path.join(run_file::METRICS),
            weights: self.path.join(run_file::WEIGHTS),
            checkpoints: self.path.clone(),
        }
    }

    /// The metrics rows so far (none before the first).
    pub fn metrics(&self) -> Result<Vec<MetricsRow>> {
        let path = self.files().metrics;
        if path.is_file() { read_metrics(&path) } else { Ok(Vec::new()) }
    }

    fn final_path(&self) -> PathBuf {
        self.path.join(run_file::FINAL)
    }

    fn lock_path(&self) -> PathBuf {
        self.path.join("lock")
    }

    /// The run's lock: held by the one process training or evaluating it (several workers share a
    /// sweep), `None` while another live process holds it. A dead process's lock is free.
    pub fn lock(&self) -> Result<Option<FileLock>> {
        FileLock::try_take(&self.lock_path())
    }

    /// Who holds the run's lock (for messages).
    pub fn lock_holder(&self) -> String {
        FileLock::holder(&self.lock_path())
    }

    /// Whether another live process holds the run's lock now.
    pub fn is_busy(&self) -> Result<bool> {
        Ok(self.lock_path().exists() && self.lock()?.is_none())
    }

    pub fn is_finished(&self) -> bool {
        self.final_path().is_file()
    }

    /// `final.json`, if the run has finished.
    pub fn final_record(&self) -> Result<Option<FinalRecord>> {
        self.final_as()
    }

    /// `final.json` of any kind of run (a detection run's record), if the run has finished.
    pub fn final_as<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        read_json(&self.final_path())
    }

    /// Written last, atomically: its presence marks the run as done.
    pub fn write_final<T: serde::Serialize>(&self, record: &T) -> Result<()> {
        write_atomic(&self.final_path(), serde_json::to_string_pretty(record)?.as_bytes())
    }

    fn eval_path(&self, p: Protocol) -> PathBuf {
        self.path.join(format!("eval-{p}.json"))
    }

    /// A final evaluation, if it was made.
    pub fn evaluation(&self, p: Protocol) -> Result<Option<EvalResult>> {
        read_json(&self.eval_path(p))
    }

    pub fn write_evaluation(&self, r: &EvalResult) -> Result<()> {
        write_atomic(&self.eval_path(r.protocol), serde_json::to_string_pretty(r)?.as_bytes())
    }

    pub fn class_index_csv(&self) -> PathBuf {
        self.path.join(run_file::CLASS_INDEX)
    }

    /// The per-pixel mean a CIFAR-style run's inputs had subtracted (1 x C x H x W).
    pub fn data_mean(&self) -> PathBuf {
        self.path.join(run_file::DATA_MEAN)
    }

    /// Records what a CIFAR-style run's inputs were, for using the network outside the suite:
    /// the class names by label (`class_index.csv`) and the training images' per-pixel mean
    /// (`data_mean.safetensors`). Written where missing.
    pub fn write_input(&self, classes: &[String], mean: &tch::Tensor) -> Result<()> {
        if !self.class_index_csv().is_file() {
            let mut text = String::from("index,class\n");
            for (i, c) in classes.iter().enumerate() {
                text.push_str(&format!("{i},{c}\n"));
            }
            crate::fsutil::write_atomic(&self.class_index_csv(), text.as_bytes())?;
        }
        if !self.data_mean().is_file() {
            let path = self.data_mean();
            crate::fsutil::write_with(&path, |tmp| {
                let mean = mean.to_device(tch::Device::Cpu).contiguous();
                tch::Tensor::write_safetensors(&[("mean", &mean)], tmp)
                    .with_context(|| format!("writing {}", path.display()))
            })?;
        }
        Ok(())
    }

    /// The class names by label (`class_index.csv`), if the run recorded them.
    pub fn class_names(&self) -> Result<Option<Vec<String>>> {
        let path = self.class_index_csv();
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let names =
            text.lines().skip(1).filter_map(|l| l.split_once(',').map(|(_, c)| c.to_string())).collect();
        Ok(Some(names))
    }

    /// The final weights of a finished run, or its newest checkpoint's.
    pub fn weights(&self) -> Result<Option<PathBuf>> {
        let done = self.files().weights;
        if done.is_file() {
            return Ok(Some(done));
        }
        Ok(checkpoint::latest(&self.path)?.map(|c| c.join(checkpoint::WEIGHTS_FILE)))
    }

    /// The run's network with its final (or newest) weights, on `device` in the run's own layout.
    pub fn load_net(&self, cfg: &RunConfig, device: Device) -> Result<LoadedNet> {
        let weights = self.weights()?.with_context(|| format!("{}: no weights yet", self.path.display()))?;
        let format = cfg.train.layout.resolve(device);
        let (vs, net) = load_net(&cfg.net, &weights, device, format)?;
        Ok(LoadedNet { vs, net, format })
    }
}

/// A network loaded from a run.
pub struct LoadedNet {
    pub vs: nn::VarStore,
    pub net: ResNet,
    pub format: MemoryFormat,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).map(Some).with_context(|| format!("parsing {}", path.display()))
}
