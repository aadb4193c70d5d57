//! Tables 7 and 8 at full size: Faster R-CNN C4 on an ImageNet backbone (ResNet-101 in the
//! paper) trained on PASCAL VOC or COCO and scored on its test split: VOC 2007's 11-point mAP,
//! COCO's mAP@.5 and mAP@[.5,.95]. The backbone starts from ImageNet weights in torchvision's
//! names (torchvision's own, exported by python/resnet_repro_torch.py, or a suite run's). A run
//! lives in `<out>/<backbone>/seed<k>/` (config.toml, metrics.csv, checkpoints, model.safetensors,
//! final.json), resumable as every run of the suite.

use super::store::{RunDir, Store};
use crate::data::transform::Normalize;
use crate::detect::coco::read_instances;
use crate::detect::images::{ImageSetFiles, Resize};
use crate::detect::score::{coco_scores, voc_map};
use crate::detect::settings::DetectorConfig;
use crate::detect::train::{DetectionRecipe, detect_shared, train};
use crate::detect::voc::{self, VocImage};
use crate::detect::voc_ap::ApMetric;
use crate::detect::{DetectionSet, Detections, FasterRcnn};
use crate::dist::{Replicas, all_ok, rank0_says};
use crate::models::{ImageNetNet, load_into};
use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, nn};

/// The data of Table 7 (VOC: year folders and splits under a VOCdevkit) or Table 8 (COCO: a
/// folder with `annotations/instances_<split>.json` and `<split>/` images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dataset", rename_all = "lowercase", deny_unknown_fields)]
pub enum PaperData {
    Voc { train: Vec<String>, test: String },
    Coco { train: String, test: String },
}

/// The input scale: the paper's shorter side 600, longer at most 1000.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub shorter: f64,
    pub longer_max: f64,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig { shorter: Resize::PAPER.shorter, longer_max: Resize::PAPER.longer_max }
    }
}

/// An experiment file (experiments/table7_voc.toml, table8_coco.toml); with the backbone's
/// weights' sha256 and the data folder, a run's config.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperDetection {
    /// `resnet101`: torchvision's layout of the network (option B, the stride in the 3x3 conv).
    pub backbone: String,
    pub seed: u64,
    pub data: PaperData,
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    pub train: DetectionRecipe,
    /// Filled in per run: the backbone weights' sha256.
    #[serde(default)]
    pub weights_sha256: String,
}

/// A finished run's `final.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperRecord {
    pub backbone: String,
    pub seed: u64,
    pub iterations: u64,
    pub test_images: usize,
    /// VOC 2007's 11-point mAP (VOC) or COCO's AP at 0.5 and over 0.5:0.95 (COCO), in [0, 1].
    pub voc07: Option<f64>,
    pub coco_ap50: Option<f64>,
    pub coco_ap: Option<f64>,
    pub seconds: f64,
    /// Where, with what and when it was trained.
    #[serde(flatten)]
    pub provenance: crate::env::Provenance,
}

impl PaperDetection {
    pub fn load(path: &Path) -> Result<Self> {
        let e: PaperDetection = crate::fsutil::read_toml(path)?;
        e.detector.settings().with_context(|| format!("{}: [detector]", path.display()))?;
        e.train.validate().with_context(|| format!("{}: [train]", path.display()))?;
        e.net()?;
        Ok(e)
    }

    fn net(&self) -> Result<ImageNetNet> {
        let depth = self.backbone.strip_prefix("resnet").and_then(|d| d.parse().ok());
        let depth =
            depth.with_context(|| format!("backbone {:?}: resnet18, 34, 50, 101 or 152", self.backbone))?;
        let net = ImageNetNet::torchvision(depth);
        net.validate()?;
        Ok(net)
    }

    fn resize(&self) -> Resize {
        Resize { shorter: self.input.shorter, longer_max: self.input.longer_max }
    }
}

/// The training and test sets, and what scores the test set.
pub struct PaperSets {
    pub train: ImageSetFiles,
    pub test: ImageSetFiles,
    pub truth: Truth,
    pub classes: usize,
}

/// The test split's annotations, as its metric needs them.
pub enum Truth {
    Voc(Vec<VocImage>),
    Coco(crate::detect::coco::CocoSplit),
}

/// Reads the annotations under `root` (a VOCdevkit, or COCO's folder); images are decoded when
/// batches are made. Says what it left out (COCO images without objects) on stderr.
pub fn load_sets(e: &PaperDetection, root: &Path) -> Result<PaperSets> {
    let (resize, norm) = (e.resize(), Normalize::TORCHVISION);
    match &e.data {
        PaperData::Voc { train, test } => {
            let split = |s: &str| -> Result<Vec<VocImage>> {
                let (year, split) = s.split_once('/').with_context(|| {
                    format!("VOC split {s:?}: <year folder>/<split>, e.g. VOC2007/trainval")
                })?;
                voc::read_split(&root.join(year), split, &voc::CLASSES)
            };
            let mut images = Vec::new();
            for s in train {
                images.extend(split(s)?);
            }
            let test = split(test)?;
            Ok(PaperSets {
                train: ImageSetFiles::from_voc(&images, resize, norm),
                test: ImageSetFiles::from_voc(&test, resize, norm),
                truth: Truth::Voc(test),
                classes: voc::CLASSES.len(),
            })
        }
        PaperData::Coco { train, test } => {
            let read =
                |s: &str| read_instances(&root.join("annotations").join(format!("instances_{s}.json")));
            let (tr, te) = (read(train)?, read(test)?);
            ensure!(
                tr.categories == te.categories,
                "instances_{train}.json and instances_{test}.json list different categories"
            );
            let (train_set, left) = ImageSetFiles::from_coco(&tr, &root.join(train), (resize, norm), true);
            if left.objects + left.images > 0 {
                eprintln!(
                    "{train}: left out of training: {} objects without area, {} images without objects (or only crowd ones)",
                    left.objects, left.images
                );
            }
            let (test_set, _) = ImageSetFiles::from_coco(&te, &root.join(test), (resize, norm), false);
            let classes = te.categories.len();
            Ok(PaperSets { train: train_set, test: test_set, truth: Truth::Coco(te), classes })
        }
    }
}

/// Trains (or resumes) the run and scores it; a finished run's record is read. With `dp`, as one
/// of its replicas: rank 0 claims and locks the run folder and writes in it, the others follow.
pub fn run(
    e: &PaperDetection,
    weights: &Path,
    sets: &PaperSets,
    (store, device): (&Store, Device),
    dp: Option<&Replicas>,
) -> Result<PaperRecord> {
    let run = PaperDetection { weights_sha256: super::release::sha256(weights)?, ..e.clone() };
    let dir = RunDir { path: store.root.join(&e.backbone).join(format!("seed{}", e.seed)) };
    let rank0 = dp.is_none_or(|d| d.rank() == 0);
    let lock = all_ok(dp, if rank0 { dir.claim(&run).and_then(|_| dir.lock()) } else { Ok(None) })?;
    ensure!(
        rank0_says(dp, lock.is_some())?,
        "{} is being trained by {}",
        dir.path.display(),
        dir.lock_holder()
    );
    let done = all_ok(dp, dir.final_as::<PaperRecord>())?;
    if rank0_says(dp, done.is_some())? {
        return done.with_context(|| {
            format!(
                "rank 0 finds {} finished but this rank does not: share runs/ between the nodes",
                dir.path.display()
            )
        });
    }
    tch::manual_seed(e.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let backbone = e.net()?.build(&(vs.root() / "backbone"))?;
    load_into(&vs, "backbone", weights)
        .with_context(|| format!("the backbone {} from {}", e.backbone, weights.display()))?;
    let (rpn, head) = e.detector.settings()?;
    let det = FasterRcnn::new(&vs.root(), backbone, sets.classes as i64 + 1, rpn, head)?;
    let label = format!("{} seed{}", e.backbone, e.seed);
    let state = train(&det, &mut vs, &sets.train, &e.train, (&dir.files(), e.seed, &label), dp)?;
    let detections = to_file_pixels(detect_shared(&det, &sets.test, (1, device), dp)?, &sets.test);
    let (mut voc07, mut coco_ap50, mut coco_ap) = (None, None, None);
    match &sets.truth {
        Truth::Voc(images) => voc07 = voc_map(&detections, images, sets.classes, ApMetric::ElevenPoint)?.0,
        Truth::Coco(split) => {
            let s = coco_scores(&detections, split)?;
            (coco_ap50, coco_ap) = (s.ap50, s.ap);
        }
    }
    let record = PaperRecord {
        backbone: e.backbone.clone(),
        seed: e.seed,
        iterations: state.iteration,
        test_images: sets.test.len(),
        voc07,
        coco_ap50,
        coco_ap,
        seconds: state.seconds,
        provenance: crate::env::Provenance::current(device),
    };
    if rank0 {
        dir.write_final(&record)?;
    }
    Ok(record)
}

/// Detections in the network's input pixels back in each image file's pixels.
fn to_file_pixels(dets: Vec<Detections>, set: &ImageSetFiles) -> Vec<Detections> {
    dets.into_iter()
        .enumerate()
        .map(|(i, d)| {
            let (sx, sy) = set.scale_of(i);
            let scale = tch::Tensor::from_slice(&[sx, sy, sx, sy]).to_kind(d.boxes.kind());
            Detections { boxes: &d.boxes / scale, scores: d.scores, labels: d.labels }
        })
        .collect()
}

/// The paper's row beside ours, for the run's summary.md.
pub fn summary_md(e: &PaperDetection, r: &PaperRecord) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", 100.0 * v));
    let paper = crate::paper::DETECTION;
    let (table, rows) = match e.data {
        PaperData::Voc { .. } => (
            "7",
            format!(
                "| VOC 2007 test mAP | {} | {:.1} | {:.1} |\n",
                pct(r.voc07),
                paper[0].vgg16,
                paper[0].resnet101
            ),
        ),
        PaperData::Coco { .. } => (
            "8",
            format!(
                "| COCO mAP@.5 | {} | {:.1} | {:.1} |\n| COCO mAP@[.5, .95] | {} | {:.1} | {:.1} |\n",
                pct(r.coco_ap50),
                paper[2].vgg16,
                paper[2].resnet101,
                pct(r.coco_ap),
                paper[3].vgg16,
                paper[3].resnet101
            ),
        ),
    };
    format!(
        "# Table {table}: Faster R-CNN C4, {} (seed {}, {} iterations, {} test images)\n\n| metric | ours (%) | \
         paper VGG-16 | paper ResNet-101 |\n|---|---|---|---|\n{rows}",
        r.backbone, r.seed, r.iterations, r.test_images
    )
}

/// Where an experiment file's runs go unless `--out` says: `runs/<its name>` (`runs/table7_voc`;
/// `runs/table7_voc_16`, another schedule, apart).
pub fn default_out(config: &Path) -> PathBuf {
    PathBuf::from("runs").join(config.file_stem().unwrap_or(std::ffi::OsStr::new("detection")))
}
