//! The CIFAR depth sweep (Table 6, Figures 1 and 6): every (network, seed) of an experiment file
//! trained in turn, finished runs skipped, partial ones resumed; then the summary beside the paper.

use crate::config::{ExperimentConfig, Preset, RunConfig, parse_group};
use crate::data::{DataOptions, Dataset, Prepared};
use crate::fsutil::subdirs;
use crate::metrics::FinalRecord;
use crate::train::{CifarData, RunStatus, TrainOptions, train_run};
use anyhow::{Context, Result, ensure};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where a sweep reads and writes.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// `runs/table6` by default.
    pub out: PathBuf,
    pub data: DataOptions,
    pub train: TrainOptions,
    /// Only these networks (`resnet20`, `plain56`), if not empty.
    pub only: Vec<String>,
}

/// Trains every run of the experiment that has not finished. Loads the data only if there is work.
pub fn run_sweep(cfg: &ExperimentConfig, opts: &SweepOptions) -> Result<Vec<(RunConfig, RunStatus)>> {
    let mut runs = cfg.resolve();
    if !opts.only.is_empty() {
        let known: Vec<String> = runs.iter().map(|r| r.net.name()).collect();
        for o in &opts.only {
            ensure!(
                known.contains(o),
                "--only {o}: not a network of experiment {} ({})",
                cfg.name,
                known.join(", ")
            );
        }
        runs.retain(|r| opts.only.contains(&r.net.name()));
    }
    let todo = runs.iter().filter(|r| !r.dir(&opts.out).join("final.json").exists()).count();
    eprintln!(
        "{}: {} runs on {} ({} preset{}), {todo} to train, results in {}",
        cfg.name,
        runs.len(),
        cfg.dataset,
        cfg.preset,
        if cfg.preset == Preset::Quick { ": NOT a reproduction, a quick check of the pipeline" } else { "" },
        opts.out.join(cfg.runs_group()).display()
    );
    let mut prepared = None;
    let mut results = Vec::new();
    for run in runs {
        let dir = run.dir(&opts.out);
        if prepared.is_none() && !dir.join("final.json").exists() {
            let ds = Dataset::load(cfg.dataset, &opts.data)?;
            eprintln!(
                "{}: {} training and {} test images from {}",
                cfg.dataset,
                ds.train.len(),
                ds.test.len(),
                ds.location.display()
            );
            prepared = Some(Prepared::new(&ds, cfg.train.val_split, opts.train.device)?);
        }
        let status = match &prepared {
            Some(p) => {
                let mut data = CifarData::new(p, run.seed, &run.train);
                train_run(&run, &mut data, &dir, &opts.train)
                    .with_context(|| format!("run {}", dir.display()))?
            }
            None => RunStatus::AlreadyDone(FinalRecord::read(&dir.join("final.json"))?),
        };
        match &status {
            RunStatus::AlreadyDone(r) => {
                eprintln!(
                    "{} seed{}: finished before, test error {:.2}%",
                    r.net,
                    r.seed,
                    r.test_error.unwrap_or(f64::NAN)
                )
            }
            RunStatus::Finished(r) => eprintln!(
                "{} seed{}: test error {:.2}% after {} iterations ({:.0} s)",
                r.net,
                r.seed,
                r.test_error.unwrap_or(f64::NAN),
                r.iterations,
                r.seconds
            ),
            RunStatus::Paused(it) => {
                eprintln!("{} seed{}: paused at iteration {it}", run.net.name(), run.seed)
            }
        }
        results.push((run, status));
    }
    Ok(results)
}

impl ExperimentConfig {
    /// The folder under `out` where this experiment's runs go.
    pub fn runs_group(&self) -> String {
        crate::config::group_name(self.dataset, self.preset)
    }
}

/// Table 6's test errors (%) of the ResNets: (best, mean, std) where the paper gives them.
pub fn paper_table6(depth: usize) -> Option<(f64, Option<(f64, f64)>)> {
    Some(match depth {
        20 => (8.75, None),
        32 => (7.51, None),
        44 => (7.17, None),
        56 => (6.97, None),
        110 => (6.43, Some((6.61, 0.16))),
        1202 => (7.93, None),
        _ => return None,
    })
}

/// `6.43 (6.61±0.16)` for several values, `8.75` for one: the paper's style.
pub fn format_best_mean_std(best: f64, mean_std: Option<(f64, f64)>) -> String {
    match mean_std {
        Some((m, s)) => format!("{best:.2} ({m:.2}±{s:.2})"),
        None => format!("{best:.2}"),
    }
}

/// Mean and sample standard deviation (n - 1).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// One network of one group in `summary.csv`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SummaryRow {
    /// `<dataset>` or `<dataset>-quick`.
    pub group: String,
    pub dataset: String,
    pub preset: String,
    pub net: String,
    pub depth: usize,
    pub residual: bool,
    pub seeds: usize,
    /// Final test error (%) of each seed, `;`-separated, in seed order.
    pub test_errors: String,
    pub best: f64,
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub std: f64,
    /// `best (mean±std)` as the paper prints it.
    pub ours: String,
    /// Table 6's figure, for ResNets on CIFAR-10.
    pub paper: String,
    /// Our best minus the paper's best, in points, where comparable (CIFAR-10, full recipe).
    pub diff: Option<f64>,
    pub iterations: u64,
    /// Test images the errors are over.
    pub test_images: usize,
    /// Mean training time per run.
    pub seconds_per_run: f64,
    pub device: String,
}

/// Reads every finished run under `out` (`<group>/<net>/seed<k>/final.json`) into summary rows,
/// plain nets before ResNets, by depth.
pub fn summarize(out: &Path) -> Result<Vec<SummaryRow>> {
    let mut rows = Vec::new();
    if !out.is_dir() {
        return Ok(rows);
    }
    let mut groups: Vec<PathBuf> = subdirs(out)?;
    groups.sort();
    for group_dir in groups {
        let group = group_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let Ok((dataset, preset)) = parse_group(&group) else { continue };
        for net_dir in subdirs(&group_dir)? {
            let mut records: Vec<FinalRecord> = Vec::new();
            for seed_dir in subdirs(&net_dir)? {
                let f = seed_dir.join("final.json");
                if f.is_file() {
                    records.push(FinalRecord::read(&f)?);
                }
            }
            if records.is_empty() {
                continue;
            }
            records.sort_by_key(|r| r.seed);
            let errs: Vec<f64> = records.iter().map(|r| r.test_error.unwrap_or(f64::NAN)).collect();
            let best = errs.iter().cloned().fold(f64::INFINITY, f64::min);
            let (mean, std) = mean_std(&errs);
            let r0 = &records[0];
            let paper = if r0.residual { paper_table6(r0.depth) } else { None };
            let comparable = dataset == crate::data::DatasetName::Cifar10 && preset == Preset::Full;
            rows.push(SummaryRow {
                group: group.clone(),
                dataset: dataset.to_string(),
                preset: preset.to_string(),
                net: r0.net.clone(),
                depth: r0.depth,
                residual: r0.residual,
                seeds: records.len(),
                test_errors: errs.iter().map(|e| format!("{e:.2}")).collect::<Vec<_>>().join(";"),
                best,
                mean,
                std,
                ours: format_best_mean_std(best, (records.len() > 1).then_some((mean, std))),
                paper: paper.map(|(b, ms)| format_best_mean_std(b, ms)).unwrap_or_default(),
                diff: paper.filter(|_| comparable).map(|(b, _)| best - b),
                iterations: r0.iterations,
                test_images: r0.test_images,
                seconds_per_run: records.iter().map(|r| r.seconds).sum::<f64>() / records.len() as f64,
                device: r0.device.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.group, a.residual, a.depth).cmp(&(&b.group, b.residual, b.depth)));
    Ok(rows)
}

/// Writes `summary.csv` and `summary.md` under `out`; returns the Markdown.
pub fn write_summary(out: &Path, rows: &[SummaryRow]) -> Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::fsutil::write_csv(&out.join("summary.csv"), rows)?;
    let md = summary_markdown(rows);
    crate::fsutil::write_atomic(&out.join("summary.md"), md.as_bytes())?;
    Ok(md)
}

pub fn summary_markdown(rows: &[SummaryRow]) -> String {
    let mut md = String::from(
        "# Table 6: test error (%) of the CIFAR networks\n\nFinal test error of the last iteration's weights (no model \
         selection on the test set); several seeds as best (mean±std, sample std), as the paper reports \
         ResNet-110. The paper gives no plain-net numbers (Fig. 6 only).\n",
    );
    if rows.is_empty() {
        md.push_str("\nNo finished runs yet: `make reproduce-table6` (or `cargo run --release --bin cifar_depth_sweep`).\n");
        return md;
    }
    let mut group = "";
    for r in rows {
        if r.group != group {
            group = &r.group;
            let what = match (r.dataset.as_str(), r.preset.as_str()) {
                ("cifar10", "full") => "CIFAR-10, the paper's recipe".to_string(),
                (ds, "quick") => format!(
                    "{ds}, quick preset: **not a reproduction** ({} iterations to check the pipeline, test error \
                     on {} test images; the paper's column is CIFAR-10 after 64k iterations, for reference only)",
                    r.iterations, r.test_images
                ),
                (ds, _) => format!(
                    "{ds}, the paper's recipe: not CIFAR-10, so the paper's column is for reference only"
                ),
            };
            let _ = write!(
                md,
                "\n## {group}\n\n{what}.\n\n| network | layers | seeds | ours | paper | diff | iterations | time per run | device |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---|\n"
            );
        }
        let diff = r.diff.map(|d| format!("{d:+.2}")).unwrap_or_default();
        let kind = if r.residual { "ResNet" } else { "plain" };
        let _ = writeln!(
            md,
            "| {kind}-{} | {} | {} | {} | {} | {diff} | {} | {} | {} |",
            r.depth,
            r.depth,
            r.seeds,
            r.ours,
            if r.paper.is_empty() { "-" } else { &r.paper },
            r.iterations,
            format_duration(r.seconds_per_run),
            r.device
        );
    }
    md
}

/// `1h 02m`, `3m 20s`, `45 s`.
pub fn format_duration(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}
