//! Figure 7 (Sec. 4.2, "Analysis of layer responses"): the standard deviation of every 3x3 layer's
//! response, its BN output before the ReLU or the addition, over the test set, for plain-20/56 and
//! ResNet-20/56/110 trained as in Table 6.

use crate::config::{ExperimentConfig, RunConfig};
use crate::data::{Dataset, Prepared};
use crate::experiment::{SweepOptions, run_sweep};
use crate::fsutil::write_csv;
use crate::models::ResNet;
use crate::shim::{MemoryFormat, contiguous};
use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn};

/// The networks of Figure 7, in the paper's legend order.
pub const FIG7_NETS: [&str; 5] = ["plain20", "plain56", "resnet20", "resnet56", "resnet110"];

/// Standard deviation of each 3x3 layer's response over every value it takes on `x` (all images,
/// channels and positions), BN in inference mode, in network order. Accumulated over batches in
/// f64: the population standard deviation of the whole set, whatever the batch size.
pub fn layer_stds(net: &ResNet, x: &Tensor, batch: usize, format: MemoryFormat) -> Result<Vec<f64>> {
    ensure!(batch > 0, "batch size 0");
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let layers = net.num_3x3_layers();
    let mut sums = Tensor::zeros([layers as i64, 2], (Kind::Double, x.device()));
    let mut count = vec![0f64; layers];
    let mut start = 0;
    while start < n {
        let len = (batch as i64).min(n - start);
        let xb = contiguous(&x.narrow(0, start, len), format)?;
        let (_, responses) = net.forward_with_responses(&xb, false);
        ensure!(responses.len() == layers, "{} responses for {layers} 3x3 layers", responses.len());
        let moments: Vec<Tensor> = responses
            .iter()
            .map(|r| {
                let r = r.to_kind(Kind::Double);
                Tensor::stack(&[r.sum(Kind::Double), r.square().sum(Kind::Double)], 0)
            })
            .collect();
        sums += Tensor::stack(&moments, 0);
        for (c, r) in count.iter_mut().zip(&responses) {
            *c += r.numel() as f64;
        }
        start += len;
    }
    let sums = Vec::<f64>::try_from(sums.to_device(Device::Cpu).flatten(0, -1))?;
    Ok(count
        .iter()
        .enumerate()
        .map(|(l, &c)| {
            let mean = sums[2 * l] / c;
            (sums[2 * l + 1] / c - mean * mean).max(0.0).sqrt()
        })
        .collect())
}

/// One row of `runs/fig7/responses.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRow {
    /// The Table 6 run group: `cifar10`, `fashion-mnist-quick`, ...
    pub group: String,
    pub net: String,
    pub depth: usize,
    pub residual: bool,
    pub seed: u64,
    /// 1-based, in network order (1 is the first conv).
    pub layer: usize,
    pub std: f64,
    /// Images the statistics are over.
    pub images: usize,
}

/// Reads `responses.csv`; a missing file is no rows.
pub fn read_responses(path: &Path) -> Result<Vec<ResponseRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.deserialize().map(|row| row.with_context(|| format!("parsing {}", path.display()))).collect()
}

/// Writes `rows` to `path`, keeping the rows of other groups that were there.
pub fn merge_responses(path: &Path, rows: &[ResponseRow]) -> Result<Vec<ResponseRow>> {
    let mut all: Vec<ResponseRow> =
        read_responses(path)?.into_iter().filter(|old| rows.iter().all(|r| r.group != old.group)).collect();
    all.extend(rows.iter().cloned());
    write_csv(path, &all)?;
    Ok(all)
}

/// Where Figure 7 reads and writes.
#[derive(Debug, Clone)]
pub struct Fig7Options {
    /// The Table 6 sweep's options: its runs are used, and missing ones trained there.
    pub sweep: SweepOptions,
    /// `runs/fig7`.
    pub out: PathBuf,
    pub eval_batch: usize,
}

/// The Table 6 runs Figure 7 uses: the first seed of each of its networks in `cfg`.
pub fn fig7_runs(cfg: &ExperimentConfig) -> Result<Vec<RunConfig>> {
    let mut runs: Vec<RunConfig> = Vec::new();
    for run in cfg.resolve() {
        let name = run.net.name();
        if FIG7_NETS.contains(&name.as_str()) && !runs.iter().any(|r| r.net.name() == name) {
            runs.push(run);
        }
    }
    ensure!(
        !runs.is_empty(),
        "experiment {} has none of Figure 7's networks ({})",
        cfg.name,
        FIG7_NETS.join(", ")
    );
    runs.sort_by_key(|r| FIG7_NETS.iter().position(|n| *n == r.net.name()));
    Ok(runs)
}

/// Trains what is missing (as Table 6 runs), then measures every run's responses on the test set and
/// writes `responses.csv`. Returns this group's rows.
pub fn run_fig7(cfg: &ExperimentConfig, opts: &Fig7Options) -> Result<Vec<ResponseRow>> {
    let runs = fig7_runs(cfg)?;
    let absent: Vec<&str> =
        FIG7_NETS.iter().copied().filter(|n| runs.iter().all(|r| r.net.name() != *n)).collect();
    if !absent.is_empty() {
        eprintln!("Figure 7: {} not in experiment {}, left out", absent.join(", "), cfg.name);
    }
    let missing: Vec<&RunConfig> =
        runs.iter().filter(|r| !r.dir(&opts.sweep.out).join("final.json").exists()).collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|r| format!("{} seed{}", r.net.name(), r.seed)).collect();
        eprintln!(
            "Figure 7: no finished Table 6 run for {}; training {} now (into {})",
            names.join(", "),
            if missing.len() == 1 { "it" } else { "them" },
            opts.sweep.out.display()
        );
        let mut sub = cfg.clone();
        for spec in &mut sub.runs {
            let first = spec.seeds.as_ref().unwrap_or(&cfg.seeds).first().copied();
            spec.seeds = first.map(|s| vec![s]);
        }
        let mut sweep = opts.sweep.clone();
        sweep.only = missing.iter().map(|r| r.net.name()).collect();
        run_sweep(&sub, &sweep)?;
    }
    let device = opts.sweep.train.device;
    let ds = Dataset::load(cfg.dataset, &opts.sweep.data)?;
    let data = Prepared::new(&ds, cfg.train.val_split, device)?;
    let images = data.test_y.size()[0] as usize;
    let mut rows = Vec::new();
    for run in &runs {
        let dir = run.dir(&opts.sweep.out);
        let weights = dir.join("model.safetensors");
        ensure!(weights.is_file(), "{}: no final weights (the run has not finished)", dir.display());
        let format = run.train.layout.resolve(device);
        let mut vs = nn::VarStore::new(device);
        let net = run.net.build(&vs.root())?;
        crate::shim::set_memory_format(&vs, format)?;
        vs.load(&weights).with_context(|| format!("loading {}", weights.display()))?;
        let stds = layer_stds(&net, &data.test_x, opts.eval_batch, format)?;
        eprintln!(
            "{} seed{}: {} layers, response std {:.3} (first) .. {:.3} (last) over {images} test images",
            run.net.name(),
            run.seed,
            stds.len(),
            stds[0],
            stds[stds.len() - 1]
        );
        rows.extend(stds.iter().enumerate().map(|(i, &std)| ResponseRow {
            group: run.group(),
            net: run.net.name(),
            depth: run.net.depth,
            residual: run.net.residual,
            seed: run.seed,
            layer: i + 1,
            std,
            images,
        }));
    }
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    merge_responses(&opts.out.join("responses.csv"), &rows)?;
    Ok(rows)
}
