//! A detector's detections of a set of images scored against their ground truth: COCO's AP over
//! IoU 0.50:0.95 and at 0.5 (`coco_ap`, pycocotools' arithmetic) and PASCAL VOC 2007's 11-point
//! mAP at IoU 0.5 (`voc_ap`), each the mean over the classes that have objects.

use super::coco_ap::{self, CocoParams};
use super::head::{Detections, Target};
use super::voc_ap::{self, ApMetric, ImageTruth, Scored};
use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use tch::Kind;

/// The scores of one set of detections (fractions in [0, 1]; `None` when no class has objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// COCO's AP, "mAP@[.5,.95]" (Table 8's second column).
    pub ap: Option<f64>,
    /// COCO's AP at IoU 0.5, "mAP@.5" (Table 8's first column).
    pub ap50: Option<f64>,
    pub ap75: Option<f64>,
    /// VOC 2007's 11-point mAP (Table 7's metric).
    pub voc07: Option<f64>,
    /// Per class label (1..): COCO's AP over the thresholds.
    pub per_class: Vec<(i64, Option<f64>)>,
}

fn rows(t: &tch::Tensor) -> Result<Vec<[f64; 4]>> {
    let v = Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1]))?;
    Ok(v.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect())
}

fn labels(t: &tch::Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(t.to_kind(Kind::Int64).reshape([-1]))?)
}

/// Scores `detections` (one per image) against `truth` for labels `1..classes`.
pub fn score(detections: &[Detections], truth: &[Target], classes: i64) -> Result<Scores> {
    ensure!(
        detections.len() == truth.len(),
        "{} images detected, {} with ground truth",
        detections.len(),
        truth.len()
    );
    let (mut gts, mut dets) = (Vec::new(), Vec::new());
    for (i, (d, t)) in detections.iter().zip(truth).enumerate() {
        let image = i as i64;
        for (b, c) in rows(&t.boxes)?.into_iter().zip(labels(&t.labels)?) {
            let bbox = [b[0], b[1], b[2] - b[0], b[3] - b[1]];
            gts.push(coco_ap::GroundTruth {
                image,
                category: c,
                bbox,
                area: bbox[2] * bbox[3],
                crowd: false,
            });
        }
        let scores = Vec::<f64>::try_from(d.scores.to_kind(Kind::Double).reshape([-1]))?;
        for ((b, c), s) in rows(&d.boxes)?.into_iter().zip(labels(&d.labels)?).zip(scores) {
            dets.push(coco_ap::Detection {
                image,
                category: c,
                bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                score: s,
            });
        }
    }
    let images: Vec<i64> = (0..truth.len() as i64).collect();
    let labels: Vec<i64> = (1..classes).collect();
    let coco = coco_ap::evaluate(&CocoParams::default(), &gts, &dets, &images, &labels);
    // The devkit's arithmetic counts a side as x2 - x1 + 1 on 1-based boxes: pixel edges are
    // handed to it 1-based (x1 + 1, y1 + 1), as detectron2's VOC evaluator does.
    let devkit = |b: [f64; 4]| [b[0] + 1.0, b[1] + 1.0, b[0] + b[2], b[1] + b[3]];
    let mut voc = Vec::new();
    for &c in &labels {
        let mut per_image = vec![ImageTruth::default(); truth.len()];
        for g in gts.iter().filter(|g| g.category == c) {
            let t = &mut per_image[g.image as usize];
            t.boxes.push(devkit(g.bbox));
            t.difficult.push(false);
        }
        let scored: Vec<Scored> = dets
            .iter()
            .filter(|d| d.category == c)
            .map(|d| Scored { image: d.image as usize, score: d.score, bbox: devkit(d.bbox) })
            .collect();
        voc.extend(voc_ap::average_precision(&per_image, &scored, 0.5, ApMetric::ElevenPoint)?);
    }
    let voc07 = (!voc.is_empty()).then(|| voc.iter().sum::<f64>() / voc.len() as f64);
    Ok(Scores { ap: coco.ap, ap50: coco.ap50, ap75: coco.ap75, voc07, per_class: coco.per_category })
}

/// PASCAL VOC's mAP as the devkit computes it: `detections` in each image's file pixels (edges),
/// the objects with their difficult flags; boxes handed to the devkit's arithmetic as it reads
/// them (1-based: x1 + 1, y1 + 1, as detectron2's VOC evaluator does). Per class AP (`None` for a
/// class without objects that count) and their mean.
pub fn voc_map(
    detections: &[Detections],
    images: &[super::voc::VocImage],
    classes: usize,
    metric: ApMetric,
) -> Result<(Option<f64>, Vec<Option<f64>>)> {
    ensure!(
        detections.len() == images.len(),
        "{} images detected, {} annotated",
        detections.len(),
        images.len()
    );
    let devkit = |b: [f64; 4]| [b[0] + 1.0, b[1] + 1.0, b[2], b[3]];
    let mut per_class = Vec::with_capacity(classes);
    for c in 1..=classes as i64 {
        let truth: Vec<ImageTruth> = images
            .iter()
            .map(|i| {
                let objs: Vec<_> = i.objects.iter().filter(|o| o.label == c).collect();
                ImageTruth {
                    boxes: objs.iter().map(|o| devkit(o.bbox)).collect(),
                    difficult: objs.iter().map(|o| o.difficult).collect(),
                }
            })
            .collect();
        let mut scored = Vec::new();
        for (k, d) in detections.iter().enumerate() {
            let scores = Vec::<f64>::try_from(d.scores.to_kind(Kind::Double).reshape([-1]))?;
            for ((b, l), s) in rows(&d.boxes)?.into_iter().zip(labels(&d.labels)?).zip(scores) {
                if l == c {
                    scored.push(Scored { image: k, score: s, bbox: devkit(b) });
                }
            }
        }
        per_class.push(voc_ap::average_precision(&truth, &scored, 0.5, metric)?);
    }
    let known: Vec<f64> = per_class.iter().flatten().copied().collect();
    let mean = (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64);
    Ok((mean, per_class))
}

/// COCO's AP of `detections` (each image's, in its file pixels, labels 1..=K) on a COCO split:
/// labels mapped back to the category ids, every image and category of the split evaluated, crowd
/// objects ignored, as pycocotools scores a results file.
pub fn coco_scores(detections: &[Detections], split: &super::coco::CocoSplit) -> Result<coco_ap::CocoScores> {
    ensure!(
        detections.len() == split.images.len(),
        "{} images detected, {} in the split",
        detections.len(),
        split.images.len()
    );
    let mut gts = Vec::new();
    let mut dets = Vec::new();
    for (img, d) in split.images.iter().zip(detections) {
        for o in &img.objects {
            gts.push(coco_ap::GroundTruth {
                image: img.id,
                category: o.category,
                bbox: o.bbox,
                area: o.area,
                crowd: o.crowd,
            });
        }
        let scores = Vec::<f64>::try_from(d.scores.to_kind(Kind::Double).reshape([-1]))?;
        for ((b, l), s) in rows(&d.boxes)?.into_iter().zip(labels(&d.labels)?).zip(scores) {
            let category =
                split.categories.get(l as usize - 1).map(|c| c.0).context("a label past the categories")?;
            dets.push(coco_ap::Detection {
                image: img.id,
                category,
                bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                score: s,
            });
        }
    }
    let images: Vec<i64> = split.images.iter().map(|i| i.id).collect();
    let categories: Vec<i64> = split.categories.iter().map(|c| c.0).collect();
    Ok(coco_ap::evaluate(&CocoParams::default(), &gts, &dets, &images, &categories))
}
