//! Tables 7-8 at small scale, on this CPU: Faster R-CNN C4 on scenes of Fashion-MNIST items
//! (`detect::scenes`), its backbone a released classification run's network (conv1 and stages
//! 1-2 shared, stage 3 per region) with its trained weights ("pretrained") or the same network
//! from its random initialisation ("scratch"), several seeds each. The paper's claims it can
//! show: residual features better than plain ones at the same depth, pre-trained better than
//! none. Each run lives in `<out>/<net>-<init>/seed<k>/` (config.toml, metrics.csv, checkpoints,
//! model.safetensors, final.json with its scores), resumable as any run of the suite;
//! `summary.csv` and `summary.md` sit beside them.

use super::store::{RunDir, Store};
use crate::data::fashion_mnist;
use crate::data::{DataOptions, ImageSet};
use crate::detect::scenes::{self, SceneSet, SceneSettings};
use crate::detect::score::{Scores, score};
use crate::detect::settings::DetectorConfig;
use crate::detect::train::{DetectionRecipe, detect_all, train};
use crate::detect::{DetectionSet, FasterRcnn};
use crate::models::{NetSpec, load_into};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, nn};

/// Where a backbone's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The classification run's final weights and BN statistics.
    Pretrained,
    /// The same network's random initialisation (seeded by the run's seed). Its BN trains (batch
    /// statistics, scale and shift learnt): it has no statistics to freeze, and frozen at its
    /// initial identity a plain net does not train at all (mAP 0 after 100 iterations here).
    Scratch,
}

impl std::fmt::Display for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Init::Pretrained => "pretrained",
            Init::Scratch => "scratch",
        })
    }
}

/// `[scenes]`: how the training and test scenes are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneConfig {
    pub size: i64,
    pub items: [usize; 2],
    pub sides: [i64; 2],
    /// Training scenes (from the training images) and test scenes (from the test images).
    pub train: usize,
    pub test: usize,
    /// The scenes' seed, the same for every run (training scenes seed, test scenes seed + 1).
    pub seed: u64,
}

impl SceneConfig {
    pub fn settings(&self) -> SceneSettings {
        SceneSettings {
            size: self.size,
            items: (self.items[0], self.items[1]),
            sides: (self.sides[0], self.sides[1]),
            ..SceneSettings::default()
        }
    }
}

/// The experiment file (experiments/detect_scenes.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneExperiment {
    /// Classification run folders whose networks are the backbones (their config.toml and final
    /// weights), relative to the current folder.
    pub backbones: Vec<PathBuf>,
    pub inits: Vec<Init>,
    pub seeds: Vec<u64>,
    pub scenes: SceneConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    pub train: DetectionRecipe,
}

impl SceneExperiment {
    pub fn load(path: &Path) -> Result<Self> {
        let e: SceneExperiment = crate::fsutil::read_toml(path)?;
        ensure!(
            !e.backbones.is_empty() && !e.inits.is_empty() && !e.seeds.is_empty(),
            "{}: no runs",
            path.display()
        );
        e.scenes.settings().validate().with_context(|| format!("{}: [scenes]", path.display()))?;
        e.detector.settings().with_context(|| format!("{}: [detector]", path.display()))?;
        e.train.validate().with_context(|| format!("{}: [train]", path.display()))?;
        Ok(e)
    }
}

/// The backbone a run starts from: the classification run's network, and its weights' sha256
/// when pre-trained (a changed file is another run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backbone {
    pub run: PathBuf,
    pub net: NetSpec,
    pub sha256: Option<String>,
}

/// One run's `config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneRun {
    pub init: Init,
    pub seed: u64,
    pub backbone: Backbone,
    pub scenes: SceneConfig,
    pub detector: DetectorConfig,
    pub train: DetectionRecipe,
}

impl SceneRun {
    pub fn name(&self) -> String {
        format!("{}-{}", self.backbone.net.name(), self.init)
    }
}

/// One run's `final.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneRecord {
    pub net: String,
    pub residual: bool,
    pub init: Init,
    pub seed: u64,
    pub iterations: u64,
    pub test_scenes: usize,
    pub scores: Scores,
    pub seconds: f64,
    /// Where, with what and when it was trained.
    #[serde(flatten)]
    pub provenance: crate::env::Provenance,
}

/// Every run of the experiment, backbones outer, then inits, then seeds.
pub fn resolve(e: &SceneExperiment) -> Result<Vec<SceneRun>> {
    let mut runs = Vec::new();
    for dir in &e.backbones {
        let cfg = RunDir { path: dir.clone() }.config().with_context(|| {
            format!(
                "backbone {}: a classification run folder expected (make release-runs writes them)",
                dir.display()
            )
        })?;
        let weights = dir.join(super::store::run_file::WEIGHTS);
        for &init in &e.inits {
            let sha256 = match init {
                Init::Pretrained => Some(super::release::sha256(&weights).with_context(|| {
                    format!("backbone {}: its final weights (the run has not finished?)", dir.display())
                })?),
                Init::Scratch => None,
            };
            let backbone = Backbone { run: dir.clone(), net: cfg.net.clone(), sha256 };
            for &seed in &e.seeds {
                runs.push(SceneRun {
                    init,
                    seed,
                    backbone: backbone.clone(),
                    scenes: e.scenes.clone(),
                    detector: e.detector.clone(),
                    train: e.train.clone(),
                });
            }
        }
    }
    Ok(runs)
}

/// The scenes every run trains and is tested on, and the pixel mean subtracted from them.
pub struct SceneData {
    pub train: SceneSet,
    pub test: SceneSet,
}

impl SceneData {
    /// Fashion-MNIST from `data`, the scenes `c` describes; the mean is the training images'.
    pub fn load(c: &SceneConfig, data: &DataOptions) -> Result<Self> {
        let (train_items, test_items, _) =
            fashion_mnist::load(&data.data_dir, &data.fashion_mnist, data.allow_download)?;
        let mean = train_items.images.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]) / 255.0;
        let make = |items: &ImageSet, n: usize, seed: u64| -> Result<SceneSet> {
            Ok(SceneSet { scenes: scenes::generate(items, n, seed, &c.settings())?, mean })
        };
        Ok(SceneData {
            train: make(&train_items, c.train, c.seed)?,
            test: make(&test_items, c.test, c.seed + 1)?,
        })
    }
}

/// The detector's classes: the background and Fashion-MNIST's ten.
pub const CLASSES: i64 = fashion_mnist::CLASSES.len() as i64 + 1;

/// Builds a run's detector on `device`: the backbone (pre-trained weights loaded, or drawn from
/// the run's seed), the RPN and the predictor drawn from the run's seed.
pub fn build(run: &SceneRun, device: Device) -> Result<(nn::VarStore, FasterRcnn)> {
    tch::manual_seed(run.seed as i64);
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let backbone = run.backbone.net.build(&(&root / "backbone"))?;
    backbone.apply_init(run.backbone.net.init());
    if run.init == Init::Pretrained {
        let weights = run.backbone.run.join(super::store::run_file::WEIGHTS);
        let sha = super::release::sha256(&weights)?;
        if run.backbone.sha256.as_deref() != Some(sha.as_str()) {
            bail!("{}: its sha256 is {sha}, not the one this run started from", weights.display());
        }
        load_into(&vs, "backbone", &weights)?;
    }
    let (rpn, head) = run.detector.settings()?;
    let mut det = FasterRcnn::new(&root, backbone, CLASSES, rpn, head)?;
    det.train_bn = run.init == Init::Scratch;
    Ok((vs, det))
}

/// A run's folder: `<out>/<net>-<init>/seed<k>`.
pub fn run_dir(store: &Store, run: &SceneRun) -> RunDir {
    RunDir { path: store.root.join(run.name()).join(format!("seed{}", run.seed)) }
}

/// Trains (or resumes) one run and scores it on the test scenes; a finished run's record is
/// read. `None` when another live process holds the run (a worker beside this one).
pub fn run_one(
    store: &Store,
    run: &SceneRun,
    data: &SceneData,
    device: Device,
) -> Result<Option<SceneRecord>> {
    let dir = run_dir(store, run);
    dir.claim(run)?;
    let Some(_lock) = dir.lock()? else { return Ok(None) };
    if let Some(done) = dir.final_as::<SceneRecord>()? {
        return Ok(Some(done));
    }
    let label = format!("{} seed{}", run.name(), run.seed);
    let (mut vs, det) = build(run, device)?;
    let state = train(&det, &mut vs, &data.train, &run.train, (&dir.files(), run.seed, &label), None)?;
    let detections = detect_all(&det, &data.test, 50, device)?;
    let scores = score(&detections, &data.test.scenes.targets, CLASSES)?;
    let record = SceneRecord {
        net: run.backbone.net.name(),
        residual: run.backbone.net.residual(),
        init: run.init,
        seed: run.seed,
        iterations: state.iteration,
        test_scenes: data.test.len(),
        scores,
        seconds: state.seconds,
        provenance: crate::env::Provenance::current(device),
    };
    dir.write_final(&record)?;
    Ok(Some(record))
}

/// Every finished run's record under `store`, by folder name and seed.
pub fn records(store: &Store) -> Result<Vec<SceneRecord>> {
    let mut out = Vec::new();
    for run in crate::fsutil::subdirs(&store.root)? {
        for seed in crate::fsutil::subdirs(&run)? {
            if let Some(r) = (RunDir { path: seed }).final_as::<SceneRecord>()? {
                out.push(r);
            }
        }
    }
    out.sort_by(|a, b| (a.residual, &a.net, a.init, a.seed).cmp(&(b.residual, &b.net, b.init, b.seed)));
    Ok(out)
}

/// A (network, init) group's scores in percent: mAP@.5 and AP@[.5,.95] per seed.
struct Group<'a> {
    net: &'a str,
    residual: bool,
    init: Init,
    ap50: Vec<f64>,
    ap: Vec<f64>,
}

fn groups(records: &[SceneRecord]) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    for r in records {
        let pct = |v: Option<f64>| v.map_or(f64::NAN, |v| 100.0 * v);
        match out.iter_mut().find(|g| g.net == r.net && g.init == r.init) {
            Some(g) => {
                g.ap50.push(pct(r.scores.ap50));
                g.ap.push(pct(r.scores.ap));
            }
            None => out.push(Group {
                net: &r.net,
                residual: r.residual,
                init: r.init,
                ap50: vec![pct(r.scores.ap50)],
                ap: vec![pct(r.scores.ap)],
            }),
        }
    }
    out
}

fn mean_std(v: &[f64]) -> String {
    let m = crate::stats::mean_std(v);
    if v.len() > 1 { format!("{:.1} ± {:.1}", m.mean, m.std) } else { format!("{:.1}", m.mean) }
}

/// "a − b" of mAP@.5 with Welch's 95% interval, and whether it shows `a` better.
fn comparison(what: &str, a: &Group, b: &Group) -> String {
    let verdict = |i: Option<crate::stats::Interval>| match i {
        Some(i) if i.lo > 0.0 => {
            format!("{:+.1} points, 95% interval [{:+.1}, {:+.1}]: shown here", i.diff, i.lo, i.hi)
        }
        Some(i) if i.hi < 0.0 => {
            format!("{:+.1} points, 95% interval [{:+.1}, {:+.1}]: the opposite here", i.diff, i.lo, i.hi)
        }
        Some(i) => {
            format!("{:+.1} points, 95% interval [{:+.1}, {:+.1}]: not shown here", i.diff, i.lo, i.hi)
        }
        None => "fewer than 2 seeds on a side: not measured".into(),
    };
    let (x, y) = (crate::stats::welch_95(&a.ap50, &b.ap50), crate::stats::welch_95(&a.ap, &b.ap));
    format!("- {what}: mAP@.5 {}; AP@[.5,.95] {}\n", verdict(x), verdict(y))
}

/// The summary table and the paper's claims as the runs show them (or do not).
pub fn summary_md(records: &[SceneRecord]) -> String {
    let mut s = String::from("# Faster R-CNN C4 on Fashion-MNIST scenes: Tables 7-8 at small scale\n\n");
    if let Some(r) = records.first() {
        s += &format!(
            "{} test scenes; {} iterations a run. Scores on the test scenes in pycocotools' arithmetic, \
             mean ± sample std over seeds.\n\n",
            r.test_scenes, r.iterations
        );
    }
    s += "| backbone | init | seeds | mAP@.5 (%) | AP@[.5,.95] (%) |\n|---|---|---|---|---|\n";
    let gs = groups(records);
    for g in &gs {
        s += &format!(
            "| {} | {} | {} | {} | {} |\n",
            g.net,
            g.init,
            g.ap50.len(),
            mean_std(&g.ap50),
            mean_std(&g.ap)
        );
    }
    s += "\n## The paper's claims, here\n";
    let find =
        |residual: bool, init: Init| gs.iter().filter(move |g| g.residual == residual && g.init == init);
    for init in [Init::Pretrained, Init::Scratch] {
        for r in find(true, init) {
            let depth = |n: &str| n.trim_start_matches(|c: char| c.is_alphabetic()).to_string();
            if let Some(p) = find(false, init).find(|p| depth(p.net) == depth(r.net)) {
                s +=
                    &comparison(&format!("residual better than plain ({} − {}, {init})", r.net, p.net), r, p);
            }
        }
    }
    for g in gs.iter().filter(|g| g.init == Init::Pretrained) {
        if let Some(z) = gs.iter().find(|z| z.net == g.net && z.init == Init::Scratch) {
            s += &comparison(&format!("pre-trained better than from scratch ({})", g.net), g, z);
        }
    }
    s += "- deeper better: measured only once backbones of two depths of one kind are released\n";
    s += "\n## The paper (Faster R-CNN, VGG-16 → ResNet-101)\n\n| table | trained, tested | metric | VGG-16 | ResNet-101 |\n|---|---|---|---|---|\n";
    for d in crate::paper::DETECTION {
        s += &format!("| {} | {} | {} | {:.1} | {:.1} |\n", d.table, d.data, d.metric, d.vgg16, d.resnet101);
    }
    s
}

/// Writes `summary.csv` (a row a run) and `summary.md` under the store; returns their paths.
pub fn write_summary(store: &Store, records: &[SceneRecord]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&store.root).with_context(|| format!("creating {}", store.root.display()))?;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["net", "init", "seed", "iterations", "test_scenes", "ap50", "ap", "ap75", "seconds"])?;
    let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for r in records {
        let (sc, it, n) = (&r.scores, r.iterations.to_string(), r.test_scenes.to_string());
        w.write_record([
            &r.net,
            &r.init.to_string(),
            &r.seed.to_string(),
            &it,
            &n,
            &f(sc.ap50),
            &f(sc.ap),
            &f(sc.ap75),
            &format!("{:.1}", r.seconds),
        ])?;
    }
    let csv = w.into_inner().map_err(|e| anyhow::anyhow!("summary.csv: {e}"))?;
    let (c, m) = (store.summary_csv(), store.summary_md());
    crate::fsutil::write_atomic(&c, &csv)?;
    crate::fsutil::write_atomic(&m, summary_md(records).as_bytes())?;
    Ok(vec![c, m])
}
