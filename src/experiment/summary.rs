//! One summary row type for every table (best, mean±std and n over seeds, for any test protocol),
//! one Markdown renderer used by both `summary.md` and REPORT.md, and the deviations from the
//! paper's recipe, read from the runs' resolved configurations.

use super::config::{Group, Preset, RunConfig};
use super::record::FinalRecord;
use super::store::{Store, StoredRun};
use crate::data::DataConfig;
use crate::data::Protocol;
use crate::fsutil::{write_atomic, write_csv};
use crate::paper::{Measure, Published, published, recipe};
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;

/// One network of one group, measured one way, over its finished seeds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SummaryRow {
    /// `<dataset>` or `<dataset>-quick`.
    #[serde(serialize_with = "display")]
    pub group: Group,
    pub net: String,
    /// `ResNet-34 B`, `plain-20`.
    pub label: String,
    pub depth: usize,
    pub residual: bool,
    pub measure: Measure,
    pub seeds: usize,
    /// Top-1 error (%) of each seed, `;`-separated, in seed order.
    pub errors: String,
    pub best: f64,
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub std: f64,
    /// `best (mean±std)` as the paper prints it; `best` alone for one seed.
    pub ours: String,
    /// Mean top-5 error (%), where measured (ImageNet).
    pub top5: Option<f64>,
    /// The paper's figure in its style, empty where it gives none.
    pub paper: String,
    pub paper_top5: Option<f64>,
    /// Our best minus the paper's, in points, where comparable (the paper's dataset and recipe).
    pub diff: Option<f64>,
    /// Images the errors are over.
    pub images: usize,
    pub iterations: u64,
    /// Mean training time per run.
    pub seconds_per_run: f64,
    pub device: String,
    /// Whether the BN statistics were re-estimated before testing.
    pub bn_reestimated: bool,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub use crate::stats::{MeanStd, mean_std};

/// `6.43 (6.61±0.16)` for several values, `8.75` for one: the paper's style.
pub fn format_best_mean_std(best: f64, mean_std: Option<MeanStd>) -> String {
    match mean_std {
        Some(MeanStd { mean, std }) => format!("{best:.2} ({mean:.2}±{std:.2})"),
        None => format!("{best:.2}"),
    }
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

/// One finished run's measurement: (top-1, top-5, images, BN re-estimated).
struct Measured {
    top1: f64,
    top5: Option<f64>,
    images: usize,
    bn: bool,
}

/// What a finished run measured one way: the final test error (CIFAR) or an evaluation file.
fn measured(run: &StoredRun, rec: &FinalRecord, m: Measure) -> Result<Option<Measured>> {
    Ok(match m {
        Measure::Test => {
            rec.test_error.map(|top1| Measured { top1, top5: None, images: rec.test_images, bn: false })
        }
        _ => {
            let p = match m {
                Measure::Center => Protocol::Center,
                Measure::TenCrop => Protocol::TenCrop,
                _ => Protocol::MultiScale,
            };
            run.dir.evaluation(p)?.map(|e| Measured {
                top1: e.top1_error,
                top5: Some(e.top5_error),
                images: e.images,
                bn: e.bn_reestimated_over.is_some(),
            })
        }
    })
}

/// The finished ones of a store's runs (as [`Store::runs`] walks them) in summary rows: per
/// group, per network in the paper's order, per measure.
pub fn summarize(runs: &[StoredRun]) -> Result<Vec<SummaryRow>> {
    let mut finished = Vec::new();
    for run in runs {
        if let Some(rec) = run.dir.final_record()? {
            finished.push((run, rec));
        }
    }
    let mut rows = Vec::new();
    let same = |a: &RunConfig, b: &RunConfig| a.group() == b.group() && a.net == b.net;
    for net in finished.chunk_by(|a, b| same(&a.0.config, &b.0.config)) {
        for m in [Measure::Test, Measure::Center, Measure::TenCrop, Measure::MultiScale] {
            let mut found = Vec::new();
            for (run, rec) in net {
                if let Some(x) = measured(run, rec, m)? {
                    found.push((x, rec));
                }
            }
            if !found.is_empty() {
                rows.push(row(&net[0].0.config, m, &found));
            }
        }
    }
    Ok(rows)
}

fn row(cfg: &RunConfig, m: Measure, found: &[(Measured, &FinalRecord)]) -> SummaryRow {
    let errs: Vec<f64> = found.iter().map(|(x, _)| x.top1).collect();
    let best = errs.iter().copied().fold(f64::INFINITY, f64::min);
    let spread = mean_std(&errs);
    let MeanStd { mean, std } = spread;
    let top5: Vec<f64> = found.iter().filter_map(|(x, _)| x.top5).collect();
    let paper: Option<Published> = published(&cfg.net, m);
    let rec = found[0].1;
    SummaryRow {
        group: cfg.group(),
        net: cfg.net.name(),
        label: cfg.net.label(),
        depth: cfg.net.depth(),
        residual: cfg.net.residual(),
        measure: m,
        seeds: found.len(),
        errors: errs.iter().map(|e| format!("{e:.2}")).collect::<Vec<_>>().join(";"),
        best,
        mean,
        std,
        ours: format_best_mean_std(best, (found.len() > 1).then_some(spread)),
        top5: (!top5.is_empty()).then(|| mean_std(&top5).mean),
        paper: paper.map(|p| format_best_mean_std(p.top1, p.mean_std)).unwrap_or_default(),
        paper_top5: paper.and_then(|p| p.top5),
        diff: paper.filter(|_| cfg.group().comparable()).map(|p| best - p.top1),
        images: found[0].0.images,
        iterations: rec.iterations,
        seconds_per_run: found.iter().map(|(_, r)| r.seconds).sum::<f64>() / found.len() as f64,
        device: rec.device.clone(),
        bn_reestimated: found[0].0.bn,
    }
}

/// The rows as Markdown: per group a heading line (`heading` is its `#`s), what the group is, and
/// one table. Top-5 columns only where a row of the group has them.
pub fn markdown(rows: &[SummaryRow], heading: &str) -> String {
    let mut md = String::new();
    for group in rows.chunk_by(|a, b| a.group == b.group) {
        let g = group[0].group;
        let what = if g.comparable() {
            format!("{}, the paper's recipe", g.dataset.pretty())
        } else if g.preset == Preset::Quick {
            format!(
                "{}, quick preset: **not a reproduction** (a shortened schedule to check the pipeline; the paper's \
                 column is for reference only)",
                g.dataset.pretty()
            )
        } else {
            format!(
                "{}, the paper's recipe on other data: the paper's column is for reference only",
                g.describe()
            )
        };
        let five = group.iter().any(|r| r.top5.is_some());
        let _ = write!(md, "\n{heading} {g}\n\n{what}.\n\n| network | test | seeds | ours | paper | diff |");
        md.push_str(if five { " top-5 | paper top-5 |" } else { "" });
        md.push_str(" images | iterations | time per run | device |\n|---|---|---:|---:|---:|---:|");
        md.push_str(if five { "---:|---:|" } else { "" });
        md.push_str("---:|---:|---:|---|\n");
        for r in group {
            let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
            let test = if r.bn_reestimated {
                format!("{} (BN re-estimated)", r.measure)
            } else {
                r.measure.to_string()
            };
            let paper = if r.paper.is_empty() { "-" } else { &r.paper };
            let diff = r.diff.map(|d| format!("{d:+.2}")).unwrap_or_default();
            let _ = write!(md, "| {} | {test} | {} | {} | {paper} | {diff} |", r.label, r.seeds, r.ours);
            if five {
                let _ = write!(md, " {} | {} |", opt(r.top5), opt(r.paper_top5));
            }
            let time = format_duration(r.seconds_per_run);
            let _ = writeln!(md, " {} | {} | {time} | {} |", r.images, r.iterations, r.device);
        }
    }
    md
}

/// Writes `summary.csv` and `summary.md` (title, what the numbers are, the deviations of the runs'
/// recipes, the tables), and beside them `findings.md` where the runs allow a finding (with
/// Figure 7's, where its responses were measured); returns the summary's Markdown.
pub fn write_summary(store: &Store, title: &str) -> Result<String> {
    let responses = crate::eval::responses::read_responses(&store.responses_csv())?;
    super::findings::write_findings(store, &format!("Findings: {title}"), &responses)?;
    let runs = store.runs()?;
    let rows = summarize(&runs)?;
    std::fs::create_dir_all(&store.root)?;
    write_csv(&store.summary_csv(), &rows)?;
    let mut md = format!("# {title}\n\n{MEASURES}\n");
    if rows.is_empty() {
        md.push_str("\nNo finished runs yet.\n");
    }
    md.push_str(&deviations_markdown(&runs));
    md.push_str(&markdown(&rows, "##"));
    write_atomic(&store.summary_md(), md.as_bytes())?;
    Ok(md)
}

/// What the summaries' numbers are.
pub const MEASURES: &str = "Error (%) of the last iteration's weights, no model selection on the test set: \
    `test` is the dataset's test set (CIFAR's, Fashion-MNIST's; one view); `center`, `ten-crop` (4 corners \
    and the centre of the image at shorter side 256, and their mirrors, softmax averaged; Tables 2 and 3) \
    and `multi-scale` (the whole image at several shorter sides and mirrored, fully convolutional; Table 4) \
    are ImageNet's validation set. Several seeds as best (mean±std, sample std), as the paper reports \
    ResNet-110; the diff is our best minus the paper's, for the paper's dataset and recipe only.";

/// The deviations of the runs' recipes as a Markdown list (nothing for no runs).
pub fn deviations_markdown(runs: &[StoredRun]) -> String {
    let replicas = |r: &StoredRun| r.dir.final_record().ok().flatten().map_or(1, |f| f.replicas);
    let lines = deviations(runs.iter().map(|r| (&r.config, replicas(r))));
    if lines.is_empty() {
        return String::new();
    }
    let mut md = String::from("\nDeviations from the paper's recipe:\n\n");
    lines.iter().for_each(|d| {
        let _ = writeln!(md, "- {d}");
    });
    md
}

/// The deviations from the paper's recipe of a set of runs, each said once, read from their
/// configurations and the data-parallel replicas each trained on (and the init, which is the
/// code's).
pub fn deviations<'a>(runs: impl IntoIterator<Item = (&'a RunConfig, usize)>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (c, replicas) in runs {
        let lines = match &c.data {
            DataConfig::ImageNet(o) => imagenet_deviations(c, o, replicas),
            DataConfig::Cifar10(o)
            | DataConfig::FashionMnist(o)
            | DataConfig::Cifar100(o)
            | DataConfig::Folder(o) => cifar_deviations(c, o, replicas),
        };
        let notes = crate::models::init_notes(c.net.init()).map(String::from);
        let precision = (c.train.precision != crate::train::Precision::Fp32).then(|| {
            format!("the training forward pass in {} autocast (the paper: fp32)", c.train.precision)
        });
        for l in lines.into_iter().chain(notes).chain(precision) {
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

/// How many images BN's statistics were over, where that is not the paper's `paper` per GPU:
/// `bn_batch` groups, else each replica's share of the batch.
fn bn_line(t: &crate::train::TrainConfig, replicas: usize, paper: usize, gpus: &str) -> Option<String> {
    let per_device = t.batch_size / replicas.max(1);
    let (images, how) = match (t.bn_batch, replicas) {
        (Some(g), _) => (g, format!("groups of {g} images (bn_batch)")),
        (None, 1) => (per_device, format!("the whole batch of {per_device} on one device")),
        (None, n) => (per_device, format!("{per_device} images per replica on {n} replicas")),
    };
    (images != paper).then(|| format!("BN statistics over {how} (the paper: {paper} per GPU on {gpus})"))
}

fn schedule_line(c: &RunConfig, iterations: u64, batch: usize, what: &str) -> Option<String> {
    let t = &c.train;
    (t.iterations != iterations || t.batch_size != batch).then(|| {
        format!(
            "{}: {} iterations of batch {}, lr {} divided by {} at {:?} (the paper: {what})",
            c.group(),
            t.iterations,
            t.batch_size,
            t.lr,
            1.0 / t.lr_decay,
            t.milestones
        )
    })
}

fn cifar_deviations(c: &RunConfig, o: &crate::data::TensorOptions, replicas: usize) -> Vec<String> {
    let t = &c.train;
    let mut v: Vec<String> = Vec::new();
    v.extend(schedule_line(c, recipe::CIFAR_ITERATIONS, recipe::CIFAR_BATCH, "64k of 128, at 32k and 48k"));
    if t.iterations == recipe::CIFAR_ITERATIONS && t.milestones != recipe::CIFAR_MILESTONES {
        v.push(format!("{}: lr divided at {:?} (the paper: 32k and 48k)", c.group(), t.milestones));
    }
    v.extend(bn_line(t, replicas, recipe::CIFAR_BN_BATCH, "two GPUs"));
    if let Some(w) = &t.warmup {
        v.push(format!(
            "{}: the warm-up (lr {} until the training error is below {}%) ends after {} iterations at the \
             latest, a cap the paper does not have",
            c.net.label(),
            w.lr,
            w.until_train_error_below,
            w.max_iterations
        ));
    }
    if let Some(k) = o.test_subset {
        v.push(format!("{}: test error over the first {k} test images", c.group()));
    }
    if o.val_split > 0 {
        v.push(format!(
            "{} training images held out for validation (the paper's final models use all 50k)",
            o.val_split
        ));
    }
    if !o.augment || o.pad != 4 {
        v.push(format!(
            "augmentation: {} (the paper: pad 4, random crop, flip)",
            if o.augment { format!("pad {}", o.pad) } else { "none".into() }
        ));
    }
    v
}

fn imagenet_deviations(c: &RunConfig, o: &crate::data::FolderOptions, replicas: usize) -> Vec<String> {
    let t = &c.train;
    let mut v: Vec<String> = Vec::new();
    v.extend(schedule_line(c, recipe::IMAGENET_ITERATIONS, recipe::IMAGENET_BATCH, "up to 600k of 256"));
    v.push(match &t.plateau {
        None => format!(
            "the learning rate is divided by 10 at fixed iterations ({:?}) rather than when the error plateaus",
            t.milestones
        ),
        Some(p) => format!(
            "the plateau rule: lr divided when the centre-crop validation error has not improved by {} points in {} \
             evaluations, at most {} times",
            p.min_improvement, p.patience, p.max_decays
        ),
    });
    v.extend(bn_line(t, replicas, recipe::IMAGENET_BN_BATCH, "8 GPUs"));
    let n = o.transform.normalize;
    v.push(format!(
        "the mean subtracted is per channel ({:?}) rather than per pixel{}",
        n.mean,
        if n.std == [1.0; 3] { String::new() } else { format!(", and pixels are divided by {:?}", n.std) }
    ));
    let tr = &o.transform;
    if (tr.min_side, tr.max_side, tr.crop) != (256, 480, 224) {
        v.push(format!(
            "{}: images scaled to shorter sides {}..{} and cropped to {} (the paper: 256..480, 224)",
            c.group(),
            tr.min_side,
            tr.max_side,
            tr.crop
        ));
    }
    if o.subset.classes.is_some() || o.subset.images_per_class.is_some() {
        let (classes, per_class) = (o.subset.classes, o.subset.images_per_class);
        let all = |n: Option<usize>| n.map_or_else(|| "all".to_string(), |n| n.to_string());
        v.push(format!(
            "{}: a subset of the training set ({} classes, {} images per class)",
            c.group(),
            all(classes),
            all(per_class)
        ));
    }
    if o.bn_reestimate_images.is_none() {
        v.push("BN statistics for testing are the moving averages (the authors' release: averaged over training batches)".into());
    }
    v
}
