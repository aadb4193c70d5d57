//! PASCAL VOC's average precision of one class, as the VOC devkit computes it (and py-faster-rcnn's
//! and detectron2's `voc_eval` after it, which the paper's Faster R-CNN numbers come from):
//! detections in decreasing score, each a true positive when its best IoU with the image's ground
//! truth (in the devkit's pixel-inclusive boxes: a side is `x2 - x1 + 1`) exceeds 0.5 and that
//! object is not yet taken; objects marked difficult neither count nor are missed. Table 7's VOC 2007
//! column uses the 11-point metric, VOC 2012 the area under the precision envelope.

use anyhow::{Result, ensure};

/// How precision and recall become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApMetric {
    /// VOC 2007: the mean over recall 0, 0.1, .., 1 of the best precision at that recall or more.
    ElevenPoint,
    /// VOC 2010 on: the area under the precision envelope.
    Area,
}

/// One image's objects of the class: boxes `(x1, y1, x2, y2)` and their difficult flags.
#[derive(Debug, Clone, Default)]
pub struct ImageTruth {
    pub boxes: Vec<[f64; 4]>,
    pub difficult: Vec<bool>,
}

/// A detection of the class: its image (an index into the truths), score and box.
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    pub image: usize,
    pub score: f64,
    pub bbox: [f64; 4],
}

/// The class's AP at IoU above `iou`; `None` when no image has an object of it that is not
/// difficult (the devkit divides by zero there). Equal scores are taken in the order given.
pub fn average_precision(
    truth: &[ImageTruth],
    detections: &[Scored],
    iou: f64,
    metric: ApMetric,
) -> Result<Option<f64>> {
    for (i, t) in truth.iter().enumerate() {
        ensure!(
            t.boxes.len() == t.difficult.len(),
            "image {i}: {} boxes, {} difficult flags",
            t.boxes.len(),
            t.difficult.len()
        );
    }
    let positives = truth.iter().flat_map(|t| &t.difficult).filter(|d| !**d).count();
    if positives == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..detections.len()).collect();
    order.sort_by(|&a, &b| detections[b].score.total_cmp(&detections[a].score));
    let mut taken: Vec<Vec<bool>> = truth.iter().map(|t| vec![false; t.boxes.len()]).collect();
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut recall, mut precision) = (Vec::new(), Vec::new());
    for d in order.iter().map(|&i| &detections[i]) {
        ensure!(d.image < truth.len(), "a detection in image {} of {}", d.image, truth.len());
        let t = &truth[d.image];
        let best = t.boxes.iter().map(|g| overlap(&d.bbox, g)).enumerate().fold(
            None,
            |best: Option<(usize, f64)>, (j, o)| match best {
                Some((_, b)) if o <= b => best,
                _ => Some((j, o)),
            },
        );
        match best {
            Some((j, o)) if o > iou => {
                if !t.difficult[j] {
                    if taken[d.image][j] {
                        fp += 1.0;
                    } else {
                        tp += 1.0;
                        taken[d.image][j] = true;
                    }
                }
            }
            _ => fp += 1.0,
        }
        recall.push(tp / positives as f64);
        precision.push(tp / f64::max(tp + fp, f64::EPSILON));
    }
    Ok(Some(match metric {
        ApMetric::ElevenPoint => eleven_point(&recall, &precision),
        ApMetric::Area => area(&recall, &precision),
    }))
}

/// IoU in the devkit's pixel-inclusive convention.
fn overlap(a: &[f64; 4], g: &[f64; 4]) -> f64 {
    let iw = (a[2].min(g[2]) - a[0].max(g[0]) + 1.0).max(0.0);
    let ih = (a[3].min(g[3]) - a[1].max(g[1]) + 1.0).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0) + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inter;
    inter / union
}

fn eleven_point(recall: &[f64], precision: &[f64]) -> f64 {
    (0..11)
        .map(|i| {
            let t = i as f64 * 0.1;
            let p = recall
                .iter()
                .zip(precision)
                .filter(|(r, _)| **r >= t)
                .map(|(_, p)| *p)
                .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
            p.unwrap_or(0.0) / 11.0
        })
        .fold(0.0, |ap, p| ap + p)
}

fn area(recall: &[f64], precision: &[f64]) -> f64 {
    let mrec: Vec<f64> =
        std::iter::once(0.0).chain(recall.iter().copied()).chain(std::iter::once(1.0)).collect();
    let mut mpre: Vec<f64> =
        std::iter::once(0.0).chain(precision.iter().copied()).chain(std::iter::once(0.0)).collect();
    for i in (1..mpre.len()).rev() {
        mpre[i - 1] = mpre[i - 1].max(mpre[i]);
    }
    (0..mrec.len() - 1)
        .filter(|&i| mrec[i + 1] != mrec[i])
        .map(|i| (mrec[i + 1] - mrec[i]) * mpre[i + 1])
        .sum()
}
