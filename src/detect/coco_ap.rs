//! COCO's average precision as pycocotools' `COCOeval` computes it for boxes (Table 8's mAP@.5 and
//! mAP@[.5,.95]): per image and category the detections by decreasing score (the best 100), matched
//! greedily to the ground truth at each IoU threshold 0.50:0.05:0.95 (crowd boxes and those out of
//! the area range ignored, matched last), then per category and threshold the precision envelope
//! sampled at the 101 recall points 0:0.01:1, averaged over every (threshold, category) that has
//! a ground truth. The same arithmetic in the same order as pycocotools (numpy's stable sorts,
//! its IoU in double, its `linspace`), so every match is the same and the averages differ only
//! in how numpy sums (pairwise; tests/detect.rs holds them within 1e-12). Boxes are COCO's:
//! (x, y, width, height).

use std::collections::BTreeMap;

/// A ground-truth object.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub image: i64,
    pub category: i64,
    /// (x, y, width, height).
    pub bbox: [f64; 4],
    /// The annotation's `area` (a segmentation's, in COCO's files), which the area ranges use.
    pub area: f64,
    pub crowd: bool,
}

/// A detection.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub image: i64,
    pub category: i64,
    pub bbox: [f64; 4],
    pub score: f64,
}

/// What is evaluated: pycocotools' `Params` for boxes, with one area range and one detection limit.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoParams {
    pub iou_thresholds: Vec<f64>,
    pub recall_thresholds: Vec<f64>,
    pub max_detections: usize,
    /// Objects (and unmatched detections) with an area outside this range are ignored.
    pub area_range: (f64, f64),
}

/// numpy's `linspace(start, stop, num)`: `i * step + start`, the last exactly `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

impl Default for CocoParams {
    /// COCO's: IoU 0.50:0.05:0.95, 101 recall points, 100 detections an image, every area.
    fn default() -> Self {
        CocoParams {
            iou_thresholds: linspace(0.5, 0.95, 10),
            recall_thresholds: linspace(0.0, 1.0, 101),
            max_detections: 100,
            area_range: (0.0, 1e10),
        }
    }
}

/// The scores: AP averaged over the IoU thresholds (COCO's AP, "mAP@[.5,.95]"), at 0.5 and at
/// 0.75, and each category's AP over the thresholds (`None` for a category without objects).
#[derive(Debug, Clone, PartialEq)]
pub struct CocoScores {
    /// `None` when no category has an object (pycocotools prints -1).
    pub ap: Option<f64>,
    pub ap50: Option<f64>,
    pub ap75: Option<f64>,
    pub per_category: Vec<(i64, Option<f64>)>,
}

/// pycocotools' `maskUtils.iou` for boxes: `[D][G]`, a crowd box's union being the detection.
fn ious(dets: &[&Detection], gts: &[&GroundTruth]) -> Vec<Vec<f64>> {
    dets.iter()
        .map(|d| {
            let (b, da) = (d.bbox, d.bbox[2] * d.bbox[3]);
            gts.iter()
                .map(|g| {
                    let (a, ga) = (g.bbox, g.bbox[2] * g.bbox[3]);
                    let w = (b[0] + b[2]).min(a[0] + a[2]) - b[0].max(a[0]);
                    let h = (b[1] + b[3]).min(a[1] + a[3]) - b[1].max(a[1]);
                    if w <= 0.0 || h <= 0.0 {
                        return 0.0;
                    }
                    let u = if g.crowd { da } else { da + ga - w * h };
                    w * h / u
                })
                .collect()
        })
        .collect()
}

/// `argsort(keys, kind='mergesort')`: a stable ascending order.
fn stable_order(keys: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    idx
}

/// One (image, category)'s matches: per threshold, whether each detection (best first) matched
/// and whether it is ignored; the scores; how many objects count.
struct ImageEval {
    scores: Vec<f64>,
    matched: Vec<Vec<bool>>,
    ignored: Vec<Vec<bool>>,
    counted: usize,
}

/// pycocotools' `evaluateImg` (its ground-truth ids are never 0, so "matched" is `dtm > 0`).
fn evaluate_image(p: &CocoParams, gts: &[&GroundTruth], dets: &[&Detection]) -> Option<ImageEval> {
    if gts.is_empty() && dets.is_empty() {
        return None;
    }
    let outside = |area: f64| area < p.area_range.0 || area > p.area_range.1;
    let g_ignore: Vec<f64> = gts.iter().map(|g| f64::from(u8::from(g.crowd || outside(g.area)))).collect();
    let g_order = stable_order(&g_ignore);
    let gts: Vec<&GroundTruth> = g_order.iter().map(|&i| gts[i]).collect();
    let g_ignore: Vec<bool> = g_order.iter().map(|&i| g_ignore[i] > 0.0).collect();
    let neg: Vec<f64> = dets.iter().map(|d| -d.score).collect();
    let dets: Vec<&Detection> =
        stable_order(&neg).into_iter().take(p.max_detections).map(|i| dets[i]).collect();
    let iou = ious(&dets, &gts);
    let t_count = p.iou_thresholds.len();
    let mut matched = vec![vec![false; dets.len()]; t_count];
    let mut ignored = vec![vec![false; dets.len()]; t_count];
    for (t, &threshold) in p.iou_thresholds.iter().enumerate() {
        let mut taken = vec![false; gts.len()];
        for d in 0..dets.len() {
            let mut best = threshold.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for g in 0..gts.len() {
                if taken[g] && !gts[g].crowd {
                    continue;
                }
                if m.is_some_and(|m| !g_ignore[m]) && g_ignore[g] {
                    break;
                }
                if iou[d][g] < best {
                    continue;
                }
                best = iou[d][g];
                m = Some(g);
            }
            if let Some(m) = m {
                ignored[t][d] = g_ignore[m];
                matched[t][d] = true;
                taken[m] = true;
            }
        }
        for (d, det) in dets.iter().enumerate() {
            let area = det.bbox[2] * det.bbox[3];
            ignored[t][d] |= !matched[t][d] && outside(area);
        }
    }
    let counted = g_ignore.iter().filter(|&&i| !i).count();
    Some(ImageEval { scores: dets.iter().map(|d| d.score).collect(), matched, ignored, counted })
}

/// pycocotools' `accumulate` for one category: the precision at each recall point, per
/// threshold (`None` when the category has no object that counts).
fn precision(p: &CocoParams, evals: &[ImageEval]) -> Option<Vec<Vec<f64>>> {
    let counted: usize = evals.iter().map(|e| e.counted).sum();
    if evals.is_empty() || counted == 0 {
        return None;
    }
    let scores: Vec<f64> = evals.iter().flat_map(|e| e.scores.iter().map(|s| -s)).collect();
    let order = stable_order(&scores);
    let mut out = Vec::with_capacity(p.iou_thresholds.len());
    for t in 0..p.iou_thresholds.len() {
        let matched: Vec<bool> = evals.iter().flat_map(|e| e.matched[t].iter().copied()).collect();
        let ignored: Vec<bool> = evals.iter().flat_map(|e| e.ignored[t].iter().copied()).collect();
        let (mut tp, mut fp) = (0.0f64, 0.0f64);
        let (mut rc, mut pr) = (Vec::new(), Vec::new());
        for &i in &order {
            tp += f64::from(u8::from(matched[i] && !ignored[i]));
            fp += f64::from(u8::from(!matched[i] && !ignored[i]));
            rc.push(tp / counted as f64);
            pr.push(tp / (fp + tp + f64::EPSILON));
        }
        for i in (1..pr.len()).rev() {
            if pr[i] > pr[i - 1] {
                pr[i - 1] = pr[i];
            }
        }
        // searchsorted(rc, thresholds, side='left'); points past the last recall stay 0.
        let q = p
            .recall_thresholds
            .iter()
            .map(|&r| rc.partition_point(|&x| x < r))
            .map(|i| pr.get(i).copied().unwrap_or(0.0))
            .collect();
        out.push(q);
    }
    Some(out)
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for x in v {
        sum += x;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// Scores `dets` against `gts` over `images` and `categories` (COCO's: every image and category
/// of the ground-truth file, sorted), as `COCOeval(gt, dt, 'bbox')` with `params`.
pub fn evaluate(
    p: &CocoParams,
    gts: &[GroundTruth],
    dets: &[Detection],
    images: &[i64],
    categories: &[i64],
) -> CocoScores {
    let mut g_by: BTreeMap<(i64, i64), Vec<&GroundTruth>> = BTreeMap::new();
    for g in gts {
        g_by.entry((g.image, g.category)).or_default().push(g);
    }
    let mut d_by: BTreeMap<(i64, i64), Vec<&Detection>> = BTreeMap::new();
    for d in dets {
        d_by.entry((d.image, d.category)).or_default().push(d);
    }
    let (mut images, mut categories) = (images.to_vec(), categories.to_vec());
    images.sort_unstable();
    images.dedup();
    categories.sort_unstable();
    categories.dedup();
    let empty = (Vec::new(), Vec::new());
    let per_category: Vec<(i64, Option<Vec<Vec<f64>>>)> = categories
        .iter()
        .map(|&c| {
            let evals: Vec<ImageEval> = images
                .iter()
                .filter_map(|&i| {
                    let g = g_by.get(&(i, c)).unwrap_or(&empty.0);
                    let d = d_by.get(&(i, c)).unwrap_or(&empty.1);
                    evaluate_image(p, g, d)
                })
                .collect();
            (c, precision(p, &evals))
        })
        .collect();
    let at = |t: Option<usize>| {
        mean(per_category.iter().filter_map(|(_, q)| q.as_ref()).flat_map(|q| {
            q.iter()
                .enumerate()
                .filter(move |(i, _)| t.is_none_or(|t| t == *i))
                .flat_map(|(_, r)| r.iter().copied())
        }))
    };
    let threshold = |v: f64| p.iou_thresholds.iter().position(|&x| (x - v).abs() < 1e-12);
    CocoScores {
        ap: at(None),
        ap50: threshold(0.5).and_then(|t| at(Some(t))),
        ap75: threshold(0.75).and_then(|t| at(Some(t))),
        per_category: per_category
            .iter()
            .map(|(c, q)| (*c, q.as_ref().and_then(|q| mean(q.iter().flatten().copied()))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_is_numpys() {
        let t = linspace(0.5, 0.95, 10);
        assert_eq!(t[0], 0.5);
        assert_eq!(t[1], 1.0 * 0.049999999999999996 + 0.5);
        assert_eq!(t[9], 0.95);
        assert_eq!(linspace(0.0, 1.0, 101)[7], 7.0 * 0.01);
    }

    #[test]
    fn one_perfect_detection_scores_one() {
        let g =
            GroundTruth { image: 1, category: 3, bbox: [10.0, 10.0, 20.0, 30.0], area: 600.0, crowd: false };
        let d = Detection { image: 1, category: 3, bbox: g.bbox, score: 0.9 };
        let s = evaluate(&CocoParams::default(), &[g], &[d], &[1], &[3, 4]);
        // pycocotools' precision is tp / (tp + fp + eps): 1 / (1 + 2^-52), not 1.
        for v in [s.ap, s.ap50, s.ap75] {
            assert!((v.unwrap() - 1.0 / (1.0 + f64::EPSILON)).abs() < 1e-15, "{v:?}");
        }
        assert_eq!((s.per_category[0].0, s.per_category[1]), (3, (4, None)));
    }
}
