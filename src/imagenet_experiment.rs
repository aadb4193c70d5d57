//! The ImageNet experiments: Table 2 (plain vs ResNet 18/34, Figure 4), Table 3 (shortcut options
//! and bottleneck nets, 10-crop) and Table 4 (multi-scale testing), on the user's ILSVRC-2012 copy.
//! Each (network, seed) is trained by the common trainer with a streaming loader, then evaluated
//! with the experiment's protocols; finished runs and evaluations are skipped, partial runs resumed.

use crate::config::{Preset, TrainConfig, group_name_str};
use crate::data::imagenet::{EvalGeometry, ImageFolder, Protocol, Subset, TrainTransform};
use crate::data::loader::{LoaderOptions, TrainLoader};
use crate::evaluate::{EvalOptions, EvalResult, evaluate_folder, reestimate_bn, spread};
use crate::fsutil::{subdirs, write_atomic};
use crate::metrics::FinalRecord;
use crate::models::{BottleneckStride, ImageNetNet, NetSpec, ResNet, Shortcut};
use crate::shim::MemoryFormat;
use crate::train::{Evaluation, RunDescription, RunStatus, TrainData, TrainOptions, train_run};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, nn};

/// The data side of an ImageNet experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageNetDataConfig {
    /// Classes and training images per class to keep (all by default).
    #[serde(default)]
    pub subset: Subset,
    /// Validation images per class to keep (all by default).
    #[serde(default)]
    pub val_images_per_class: Option<usize>,
    #[serde(default)]
    pub transform: TrainTransform,
    #[serde(default)]
    pub geometry: EvalGeometry,
    /// Validation images (spread over the classes) for the centre-crop error logged during training,
    /// Figure 4's bold curves; the whole validation folder when absent.
    #[serde(default)]
    pub val_images: Option<usize>,
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Protocols of the final evaluation on the whole validation folder.
    pub final_protocols: Vec<Protocol>,
    /// Re-estimate the BN statistics over this many training images before the final evaluation.
    #[serde(default)]
    pub bn_reestimate_images: Option<usize>,
}

fn default_eval_batch() -> usize {
    64
}

/// One network of an ImageNet experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageNetRunSpec {
    pub depth: usize,
    pub residual: bool,
    #[serde(default)]
    pub shortcut: Shortcut,
    #[serde(default)]
    pub bottleneck_stride: BottleneckStride,
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
}

/// An ImageNet experiment file (`experiments/table2_imagenet.toml`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageNetExperiment {
    pub name: String,
    #[serde(default)]
    pub preset: Preset,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    pub train: TrainConfig,
    pub data: ImageNetDataConfig,
    pub runs: Vec<ImageNetRunSpec>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// One resolved run; saved as `config.toml` in its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageNetRunConfig {
    pub experiment: String,
    pub preset: Preset,
    pub seed: u64,
    pub net: ImageNetNet,
    pub train: TrainConfig,
    pub data: ImageNetDataConfig,
}

impl RunDescription for ImageNetRunConfig {
    fn seed(&self) -> u64 {
        self.seed
    }
    fn train(&self) -> &TrainConfig {
        &self.train
    }
    fn net(&self) -> NetSpec {
        NetSpec::ImageNet(self.net.clone())
    }
    fn dataset(&self) -> String {
        "imagenet".into()
    }
    fn preset(&self) -> Preset {
        self.preset
    }
}

impl ImageNetRunConfig {
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join(group_name_str("imagenet", self.preset))
            .join(self.net.name())
            .join(format!("seed{}", self.seed))
    }
}

impl ImageNetExperiment {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("reading experiment file {} (the files are under experiments/)", path.display())
        })?;
        let cfg: ImageNetExperiment =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.validate().with_context(|| format!("in {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.runs.is_empty(), "no [[runs]]");
        self.train.validate()?;
        ensure!(!self.data.final_protocols.is_empty(), "data.final_protocols is empty");
        let t = &self.data.transform;
        ensure!(
            t.min_side <= t.max_side && t.crop <= t.min_side,
            "transform: need crop <= min_side <= max_side"
        );
        for r in &self.runs {
            self.net(r, 1000).validate()?;
        }
        Ok(())
    }

    fn net(&self, r: &ImageNetRunSpec, classes: usize) -> ImageNetNet {
        ImageNetNet {
            depth: r.depth,
            residual: r.residual,
            shortcut: r.shortcut,
            bottleneck_stride: r.bottleneck_stride,
            num_classes: classes as i64,
            image_size: i64::from(self.data.transform.crop),
        }
    }

    /// Every (network, seed), for a dataset of `classes` classes.
    pub fn resolve(&self, classes: usize) -> Vec<ImageNetRunConfig> {
        let mut out = Vec::new();
        for r in &self.runs {
            for &seed in r.seeds.as_ref().unwrap_or(&self.seeds) {
                out.push(ImageNetRunConfig {
                    experiment: self.name.clone(),
                    preset: self.preset,
                    seed,
                    net: self.net(r, classes),
                    train: self.train.clone(),
                    data: self.data.clone(),
                });
            }
        }
        out
    }
}

/// The ImageNet root: `<dir>` with `train/` and `val/`, or `<dir>/imagenet` with them.
pub fn locate_root(dir: &Path) -> Result<PathBuf> {
    for root in [dir.to_path_buf(), dir.join("imagenet")] {
        if root.join("train").is_dir() && root.join("val").is_dir() {
            return Ok(root);
        }
    }
    bail!(
        "no ImageNet folder at {}: expected {0}/train/<wnid>/*.JPEG and {0}/val/<wnid>/*.JPEG (val sorted into \
         class folders, as torchvision's ImageFolder wants); pass --data-dir (make: DATA_DIR=) to your \
         ILSVRC-2012 copy, or make a small sample with `cargo run --release --bin export_imagefolder`",
        dir.display()
    )
}

/// Loader settings that do not change results.
#[derive(Debug, Clone)]
pub struct LoaderSettings {
    pub threads: usize,
    pub prefetch: usize,
    pub skip_corrupt: bool,
}

/// ImageNet batches from a streaming loader, centre-crop validation during training.
pub struct ImageNetData {
    train: Arc<ImageFolder>,
    val: Arc<ImageFolder>,
    cfg: ImageNetDataConfig,
    opts: LoaderOptions,
    loader: Option<TrainLoader>,
    device: Device,
    val_indices: Vec<usize>,
}

impl ImageNetData {
    pub fn new(
        train: Arc<ImageFolder>,
        val: Arc<ImageFolder>,
        cfg: &ImageNetDataConfig,
        batch_size: usize,
        seed: u64,
        settings: &LoaderSettings,
        device: Device,
    ) -> Self {
        let val_indices = spread(val.len(), cfg.val_images.unwrap_or(val.len()));
        let opts = LoaderOptions {
            batch_size,
            threads: settings.threads,
            prefetch: settings.prefetch,
            seed,
            skip_corrupt: settings.skip_corrupt,
        };
        ImageNetData { train, val, cfg: cfg.clone(), opts, loader: None, device, val_indices }
    }

    fn eval_options(&self, protocol: Protocol, format: MemoryFormat) -> EvalOptions {
        EvalOptions {
            protocol,
            geometry: self.cfg.geometry.clone(),
            normalize: self.cfg.transform.normalize,
            batch: self.cfg.eval_batch_size,
            threads: self.opts.threads,
            device: self.device,
            format,
            progress: false,
        }
    }
}

impl TrainData for ImageNetData {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn start(&mut self, iteration: u64) -> Result<()> {
        self.loader = Some(TrainLoader::start(
            self.train.clone(),
            self.cfg.transform.clone(),
            self.opts.clone(),
            iteration,
        )?);
        Ok(())
    }

    fn batch(&mut self, iteration: u64) -> Result<(tch::Tensor, tch::Tensor)> {
        let loader = self.loader.as_mut().context("loader not started")?;
        let b = loader.next_batch()?;
        ensure!(
            b.iteration == iteration,
            "the loader is at batch {}, the trainer at {iteration}",
            b.iteration
        );
        Ok(b.to_tensors(self.device))
    }

    fn evaluate(&mut self, net: &ResNet, format: MemoryFormat) -> Result<Evaluation> {
        let r = evaluate_folder(
            net,
            &self.val,
            Some(&self.val_indices),
            &self.eval_options(Protocol::Center, format),
        )?;
        Ok(Evaluation {
            val_error: Some(r.top1_error),
            val_top5_error: Some(r.top5_error),
            test_error: None,
            images: r.images,
        })
    }

    fn skipped(&self) -> u64 {
        self.loader.as_ref().map_or(0, |l| l.skipped())
    }
}

/// Where an ImageNet experiment reads and writes.
#[derive(Debug, Clone)]
pub struct ImageNetOptions {
    pub out: PathBuf,
    pub data_dir: PathBuf,
    pub loader: LoaderSettings,
    pub train: TrainOptions,
    /// Only these networks (`resnet34-B`), if not empty.
    pub only: Vec<String>,
}

/// The result of one run of an experiment.
pub struct RunOutcome {
    pub run: ImageNetRunConfig,
    pub status: RunStatus,
    pub evals: Vec<EvalResult>,
}

/// Trains and evaluates every run of the experiment that is not done.
pub fn run_experiment(cfg: &ImageNetExperiment, o: &ImageNetOptions) -> Result<Vec<RunOutcome>> {
    let root = locate_root(&o.data_dir)?;
    let train = Arc::new(ImageFolder::scan(&root.join("train"), cfg.data.subset)?);
    let val_subset =
        Subset { classes: cfg.data.subset.classes, images_per_class: cfg.data.val_images_per_class };
    let val = Arc::new(ImageFolder::scan(&root.join("val"), val_subset)?);
    val.check_same_classes(&train)?;
    let mut runs = cfg.resolve(train.classes.len());
    if !o.only.is_empty() {
        let known: Vec<String> = runs.iter().map(|r| r.net.name()).collect();
        for name in &o.only {
            ensure!(
                known.contains(name),
                "--only {name}: not a network of experiment {} ({})",
                cfg.name,
                known.join(", ")
            );
        }
        runs.retain(|r| o.only.contains(&r.net.name()));
    }
    eprintln!(
        "{}: {} runs, {} classes, {} training and {} validation images from {} ({} preset{})",
        cfg.name,
        runs.len(),
        train.classes.len(),
        train.len(),
        val.len(),
        root.display(),
        cfg.preset,
        if cfg.preset == Preset::Quick { ": NOT a reproduction, a quick check of the pipeline" } else { "" }
    );
    let mut outcomes = Vec::new();
    for run in runs {
        let dir = run.dir(&o.out);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        train.write_class_index(&dir.join("class_index.csv"))?;
        let mut data = ImageNetData::new(
            train.clone(),
            val.clone(),
            &run.data,
            run.train.batch_size,
            run.seed,
            &o.loader,
            o.train.device,
        );
        let status =
            train_run(&run, &mut data, &dir, &o.train).with_context(|| format!("run {}", dir.display()))?;
        let evals = match &status {
            RunStatus::Paused(_) => Vec::new(),
            _ => final_evaluations(&run, &dir, &train, &val, o)?,
        };
        outcomes.push(RunOutcome { run, status, evals });
    }
    Ok(outcomes)
}

fn eval_path(dir: &Path, p: Protocol) -> PathBuf {
    dir.join(format!("eval-{p}.json"))
}

/// The experiment's final evaluations of a finished run, each written once as `eval-<protocol>.json`.
fn final_evaluations(
    run: &ImageNetRunConfig,
    dir: &Path,
    train: &Arc<ImageFolder>,
    val: &Arc<ImageFolder>,
    o: &ImageNetOptions,
) -> Result<Vec<EvalResult>> {
    let todo: Vec<Protocol> =
        run.data.final_protocols.iter().copied().filter(|p| !eval_path(dir, *p).exists()).collect();
    let mut results = Vec::new();
    if !todo.is_empty() {
        let device = o.train.device;
        let format = run.train.layout.resolve(device);
        let mut vs = nn::VarStore::new(device);
        let net = run.net.build(&vs.root())?;
        crate::shim::set_memory_format(&vs, format)?;
        vs.load(dir.join("model.safetensors")).with_context(|| format!("loading {}", dir.display()))?;
        let reestimated = match run.data.bn_reestimate_images {
            Some(k) => {
                let batches = k.div_ceil(run.train.batch_size).max(1);
                let opts = LoaderOptions {
                    batch_size: run.train.batch_size,
                    threads: o.loader.threads,
                    prefetch: o.loader.prefetch,
                    seed: run.seed,
                    skip_corrupt: o.loader.skip_corrupt,
                };
                // The batches that would follow the last update: the run's augmentation, fresh draws.
                let mut loader = TrainLoader::start(
                    train.clone(),
                    run.data.transform.clone(),
                    opts,
                    run.train.iterations,
                )?;
                let iter = (0..batches).map(|_| loader.next_batch().map(|b| b.to_tensors(device).0));
                let n = reestimate_bn(&net, &vs, iter, format)?;
                eprintln!("{}: BN statistics re-estimated over {n} training images", run.net.name());
                Some(n)
            }
            None => None,
        };
        let data = ImageNetData::new(
            train.clone(),
            val.clone(),
            &run.data,
            run.train.batch_size,
            run.seed,
            &o.loader,
            device,
        );
        for p in todo {
            let mut opts = data.eval_options(p, format);
            opts.progress = true;
            let mut r = evaluate_folder(&net, val, None, &opts)?;
            r.bn_reestimated_over = reestimated;
            eprintln!(
                "{} seed{}: {p} top-1 {:.2}%, top-5 {:.2}% on {} images ({:.0} s)",
                run.net.name(),
                run.seed,
                r.top1_error,
                r.top5_error,
                r.images,
                r.seconds
            );
            write_atomic(&eval_path(dir, p), serde_json::to_string_pretty(&r)?.as_bytes())?;
        }
    }
    for p in &run.data.final_protocols {
        let path = eval_path(dir, *p);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        results.push(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?);
    }
    Ok(results)
}

/// The paper's ImageNet validation errors (%) for a network and protocol: (top-1, top-5 if given).
/// Tables 2 and 3 are 10-crop, Table 4 multi-scale (single models).
pub fn paper_imagenet(net: &str, protocol: Protocol) -> Option<(f64, Option<f64>)> {
    match protocol {
        Protocol::TenCrop => Some(match net {
            "plain18" => (27.94, None),
            "plain34" => (28.54, Some(10.02)),
            "resnet18-A" => (27.88, None),
            "resnet34-A" => (25.03, Some(7.76)),
            "resnet34-B" => (24.52, Some(7.46)),
            "resnet34-C" => (24.19, Some(7.40)),
            "resnet50-B" => (22.85, Some(6.71)),
            "resnet101-B" => (21.75, Some(6.05)),
            "resnet152-B" => (21.43, Some(5.71)),
            _ => return None,
        }),
        Protocol::MultiScale => Some(match net {
            "resnet34-B" => (21.84, Some(5.71)),
            "resnet34-C" => (21.53, Some(5.60)),
            "resnet50-B" => (20.74, Some(5.25)),
            "resnet101-B" => (19.87, Some(4.60)),
            "resnet152-B" => (19.38, Some(4.49)),
            _ => return None,
        }),
        Protocol::Center => None,
    }
}

/// One network and protocol in an ImageNet `summary.csv`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageNetSummaryRow {
    pub group: String,
    pub net: String,
    pub protocol: String,
    pub seeds: usize,
    /// Mean over seeds.
    pub top1_error: f64,
    pub top5_error: f64,
    pub paper_top1: Option<f64>,
    pub paper_top5: Option<f64>,
    /// Ours minus the paper's top-1, in points, where comparable (the full recipe).
    pub diff_top1: Option<f64>,
    pub images: usize,
    pub iterations: u64,
    pub seconds_per_run: f64,
    pub bn_reestimated: bool,
}

/// The paper's row order for a run folder's name: plain before residual, then by depth and
/// shortcut option (`resnet34-B` before `resnet101-B`, which sorts first as text).
pub fn table_order(name: &str) -> (bool, usize, String) {
    let residual = name.starts_with("resnet");
    let rest = name.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (residual, digits.parse().unwrap_or(usize::MAX), name.to_string())
}

/// Reads every evaluation under `out` (`<group>/<net>/seed<k>/eval-<protocol>.json`).
pub fn summarize(out: &Path) -> Result<Vec<ImageNetSummaryRow>> {
    let mut rows = Vec::new();
    for group_dir in subdirs(out)? {
        let group = group_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let full = group == "imagenet";
        let mut net_dirs = subdirs(&group_dir)?;
        net_dirs.sort_by_cached_key(|d| table_order(&d.file_name().unwrap_or_default().to_string_lossy()));
        for net_dir in net_dirs {
            let net = net_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            for p in [Protocol::Center, Protocol::TenCrop, Protocol::MultiScale] {
                let mut evals: Vec<(EvalResult, FinalRecord)> = Vec::new();
                for seed_dir in subdirs(&net_dir)? {
                    let path = eval_path(&seed_dir, p);
                    let fin = seed_dir.join("final.json");
                    if path.is_file() && fin.is_file() {
                        let text = std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        let e: EvalResult = serde_json::from_str(&text)
                            .with_context(|| format!("parsing {}", path.display()))?;
                        evals.push((e, FinalRecord::read(&fin)?));
                    }
                }
                if evals.is_empty() {
                    continue;
                }
                let n = evals.len() as f64;
                let top1 = evals.iter().map(|(e, _)| e.top1_error).sum::<f64>() / n;
                let top5 = evals.iter().map(|(e, _)| e.top5_error).sum::<f64>() / n;
                let paper = paper_imagenet(&net, p);
                rows.push(ImageNetSummaryRow {
                    group: group.clone(),
                    net: net.clone(),
                    protocol: p.to_string(),
                    seeds: evals.len(),
                    top1_error: top1,
                    top5_error: top5,
                    paper_top1: paper.map(|x| x.0),
                    paper_top5: paper.and_then(|x| x.1),
                    diff_top1: paper.filter(|_| full).map(|x| top1 - x.0),
                    images: evals[0].0.images,
                    iterations: evals[0].1.iterations,
                    seconds_per_run: evals.iter().map(|(_, f)| f.seconds).sum::<f64>() / n,
                    bn_reestimated: evals[0].0.bn_reestimated_over.is_some(),
                });
            }
        }
    }
    Ok(rows)
}

/// Writes `summary.csv` and `summary.md` under `out`; returns the Markdown.
pub fn write_summary(out: &Path, title: &str, rows: &[ImageNetSummaryRow]) -> Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::fsutil::write_csv(&out.join("summary.csv"), rows)?;
    let mut md = format!(
        "# {title}\n\nImageNet validation error (%), single models; 10-crop for Tables 2 and 3, fully-convolutional \
         multi-scale for Table 4, centre crop as in Figure 4; mean over seeds.\n"
    );
    if rows.is_empty() {
        md.push_str("\nNo finished runs yet.\n");
    }
    let mut group = "";
    for r in rows {
        if r.group != group {
            group = &r.group;
            let what = if group == "imagenet" {
                "ILSVRC-2012, the paper's recipe".to_string()
            } else {
                "quick preset: **not a reproduction** (a small subset, a few iterations, scaled-down images; the paper's \
                 columns are for reference only)"
                    .to_string()
            };
            let _ = write!(
                md,
                "\n## {group}\n\n{what}.\n\n| network | protocol | top-1 | top-5 | paper top-1 | paper top-5 | diff | images | \
                 iterations | time per run |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            );
        }
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            md,
            "| {} | {}{} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
            r.net,
            r.protocol,
            if r.bn_reestimated { " (BN re-estimated)" } else { "" },
            r.top1_error,
            r.top5_error,
            opt(r.paper_top1),
            opt(r.paper_top5),
            r.diff_top1.map(|d| format!("{d:+.2}")).unwrap_or_default(),
            r.images,
            r.iterations,
            crate::experiment::format_duration(r.seconds_per_run)
        );
    }
    write_atomic(&out.join("summary.md"), md.as_bytes())?;
    Ok(md)
}

/// What the ImageNet binaries do: load `experiments/<table>_imagenet[_quick].toml` (or --config),
/// apply the flags, train and evaluate, write the summary and Figure 4.
pub fn run_cli(args: &crate::cli::ImageNetArgs, table: &str, title: &str) -> Result<()> {
    let path = match (&args.config, args.quick) {
        (Some(p), _) => p.clone(),
        (None, true) => PathBuf::from(format!("experiments/{table}_imagenet_quick.toml")),
        (None, false) => PathBuf::from(format!("experiments/{table}_imagenet.toml")),
    };
    let mut cfg = ImageNetExperiment::from_file(&path)?;
    if let Some(seeds) = &args.seeds {
        cfg.seeds = seeds.clone();
        cfg.runs.iter_mut().for_each(|r| r.seeds = None);
    }
    if args.classes.is_some() {
        cfg.data.subset.classes = args.classes;
    }
    if args.images_per_class.is_some() {
        cfg.data.subset.images_per_class = args.images_per_class;
    }
    cfg.validate()?;
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = crate::env::parse_device(&args.device)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{table}")));
    let opts = ImageNetOptions {
        out: out.clone(),
        data_dir: args.data_dir.clone(),
        loader: LoaderSettings {
            threads: args.loader_threads(),
            prefetch: args.prefetch,
            skip_corrupt: args.skip_corrupt,
        },
        train: TrainOptions::new(device),
        only: args.only.clone(),
    };
    run_experiment(&cfg, &opts)?;
    let md = write_summary(&out, title, &summarize(&out)?)?;
    println!("{md}");
    for f in crate::plot::render_imagenet_figures(&out, &args.plots)? {
        println!("wrote {}", f.display());
    }
    println!("wrote {} and {}", out.join("summary.csv").display(), out.join("summary.md").display());
    Ok(())
}
