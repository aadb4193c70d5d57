//! A detector's detections of a set of images scored against their ground truth: COCO's AP over
//! IoU 0.50:0.95 and at 0.5 (`coco_ap`, pycocotools' arithmetic) and PASCAL VOC 2007's 11-point
//! mAP at IoU 0.5 (`voc_ap`), each the mean over the classes that have objects.

use super::coco_ap::{self, CocoParams};
use super::head::{Detections, Target};
use super::voc_ap::{self, ApMetric, ImageTruth, Scored};
use anyhow::{Result, ensure};
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
    let mut voc = Vec::new();
    for &c in &labels {
        let mut per_image = vec![ImageTruth::default(); truth.len()];
        for g in gts.iter().filter(|g| g.category == c) {
            let t = &mut per_image[g.image as usize];
            t.boxes.push([g.bbox[0], g.bbox[1], g.bbox[0] + g.bbox[2], g.bbox[1] + g.bbox[3]]);
            t.difficult.push(false);
        }
        let scored: Vec<Scored> = dets
            .iter()
            .filter(|d| d.category == c)
            .map(|d| Scored {
                image: d.image as usize,
                score: d.score,
                bbox: [d.bbox[0], d.bbox[1], d.bbox[0] + d.bbox[2], d.bbox[1] + d.bbox[3]],
            })
            .collect();
        voc.extend(voc_ap::average_precision(&per_image, &scored, 0.5, ApMetric::ElevenPoint)?);
    }
    let voc07 = (!voc.is_empty()).then(|| voc.iter().sum::<f64>() / voc.len() as f64);
    Ok(Scores { ap: coco.ap, ap50: coco.ap50, ap75: coco.ap75, voc07, per_class: coco.per_category })
}
