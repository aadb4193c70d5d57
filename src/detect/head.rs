//! The detection head of the C4 design (the paper's Appendix A, torchvision's `RoIHeads`): the
//! proposals (in training with the ground truth added, matched at IoU 0.5 and sampled), RoI
//! pooling on the shared map, the backbone's last stage on each region, global average pooling,
//! and a predictor of class scores and per-class box deltas. Its losses: cross-entropy and smooth
//! L1; its detections: per class, score above 0.05, NMS at 0.5, the best 100 an image.

use super::boxes::{BoxCoder, box_iou, clip_to_image, keep_large};
use super::matching::{self, Matcher, Sampler};
use super::nms::batched_nms;
use super::roi_pool::roi_pool;
use crate::models::net::Fc;
use anyhow::{Result, ensure};
use tch::{Kind, Reduction, Tensor, nn};

/// An image's ground truth: boxes `[M, 4]` (pixels, the network's input) and class labels `[M]`
/// (int64, 1.. for objects; 0 is the background).
#[derive(Debug)]
pub struct Target {
    pub boxes: Tensor,
    pub labels: Tensor,
}

impl Target {
    /// Boxes `[M, 4]` with positive width and height, a label of at least 1 for each.
    pub fn validate(&self, (height, width): (i64, i64)) -> Result<()> {
        let (b, l) = (self.boxes.size(), self.labels.size());
        ensure!(b.len() == 2 && b[1] == 4, "boxes of shape {b:?}: [M, 4] expected");
        ensure!(l == [b[0]], "{l:?} labels for {} boxes", b[0]);
        if b[0] == 0 {
            return Ok(());
        }
        let w = self.boxes.select(1, 2) - self.boxes.select(1, 0);
        let h = self.boxes.select(1, 3) - self.boxes.select(1, 1);
        let bad = w.le(0.0).logical_or(&h.le(0.0)).nonzero();
        if bad.size()[0] > 0 {
            let i = bad.int64_value(&[0, 0]);
            let row = Vec::<f64>::try_from(self.boxes.get(i).to_kind(Kind::Double))?;
            anyhow::bail!("box {i} {row:?} (x1, y1, x2, y2) has no area in an image of {width}x{height}");
        }
        ensure!(self.labels.min().int64_value(&[]) >= 1, "a label below 1 (0 is the background)");
        Ok(())
    }
}

/// An image's detections: boxes `[D, 4]`, scores `[D]`, labels `[D]` (int64), best first.
#[derive(Debug)]
pub struct Detections {
    pub boxes: Tensor,
    pub scores: Tensor,
    pub labels: Tensor,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeadSettings {
    /// RoI pooling's output, before the last stage (whose first block halves it).
    pub pooled: (i64, i64),
    pub matcher: Matcher,
    pub sampler: Sampler,
    pub score_threshold: f64,
    pub nms_threshold: f64,
    pub per_image: i64,
    /// Detections with a side shorter than this (pixels) are dropped.
    pub min_size: f64,
}

impl Default for HeadSettings {
    fn default() -> Self {
        HeadSettings {
            pooled: (14, 14),
            matcher: Matcher::HEAD,
            sampler: Sampler::HEAD,
            score_threshold: 0.05,
            nms_threshold: 0.5,
            per_image: 100,
            min_size: 1e-2,
        }
    }
}

impl HeadSettings {
    pub fn validate(&self) -> Result<()> {
        self.matcher.validate()?;
        self.sampler.validate()?;
        ensure!(self.pooled.0 > 0 && self.pooled.1 > 0, "a pooled size of {:?}", self.pooled);
        ensure!(self.per_image > 0, "{} detections an image: at least 1 expected", self.per_image);
        ensure!(
            (0.0..=1.0).contains(&self.nms_threshold),
            "a detection NMS threshold of {}",
            self.nms_threshold
        );
        Ok(())
    }
}

/// The class scores and box deltas of `num_classes` classes (the background included) from a
/// region's pooled feature; torchvision's `FastRCNNPredictor` (`cls_score`, `bbox_pred`), two fc
/// layers initialised as PyTorch's `nn.Linear` (the networks' own fc).
#[derive(Debug)]
pub struct Predictor {
    cls_score: Fc,
    bbox_pred: Fc,
}

impl Predictor {
    pub fn new(p: &nn::Path, features: i64, num_classes: i64) -> Predictor {
        Predictor {
            cls_score: Fc::new(&(p / "cls_score"), features, num_classes),
            bbox_pred: Fc::new(&(p / "bbox_pred"), features, 4 * num_classes),
        }
    }

    /// Class logits `[K, classes]` and box deltas `[K, 4 classes]`.
    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        (self.cls_score.forward(x), self.bbox_pred.forward(x))
    }
}

/// The regions a training step uses: per image the sampled proposals, their labels (0 background)
/// and regression targets.
#[derive(Debug)]
pub struct Samples {
    pub proposals: Vec<Tensor>,
    pub labels: Vec<Tensor>,
    pub targets: Vec<Tensor>,
}

/// The proposals with the ground truth added, matched and sampled (`Sampler::sample` draws,
/// image by image, positives first, as torchvision).
pub fn sample(s: &HeadSettings, proposals: &[Tensor], truth: &[Target]) -> Result<Samples> {
    ensure!(
        proposals.len() == truth.len(),
        "{} images of proposals for {} targets",
        proposals.len(),
        truth.len()
    );
    let mut out = Samples { proposals: vec![], labels: vec![], targets: vec![] };
    for (p, t) in proposals.iter().zip(truth) {
        let gt = t.boxes.to_kind(p.kind());
        let p = Tensor::cat(&[p, &gt], 0);
        let (labels, matched) = assign(s, &p, &gt, &t.labels)?;
        let (pos, neg) = s.sampler.sample(&labels);
        let keep = pos.logical_or(&neg).nonzero().squeeze_dim(1);
        let p = p.index_select(0, &keep);
        // An image without objects has no positives: its targets are never read.
        let gt = if gt.size()[0] == 0 {
            p.zeros_like()
        } else {
            gt.index_select(0, &matched.index_select(0, &keep))
        };
        out.targets.push(BoxCoder::HEAD.encode(&gt, &p)?);
        out.labels.push(labels.index_select(0, &keep));
        out.proposals.push(p);
    }
    Ok(out)
}

/// Each box's label (its ground truth's class, 0 background, -1 ignored) and matched ground truth.
fn assign(s: &HeadSettings, boxes: &Tensor, gt: &Tensor, gt_labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = boxes.size()[0];
    if gt.size()[0] == 0 {
        let zeros = boxes.new_zeros([n], (Kind::Int64, boxes.device()));
        return Ok((zeros.copy(), zeros));
    }
    let m = s.matcher.assign(&box_iou(gt, boxes))?;
    let matched = m.clamp_min(0);
    let labels = gt_labels.to_kind(Kind::Int64).index_select(0, &matched);
    Ok((matching::labels(&labels, &m), matched))
}

/// RoI pooling of every image's boxes from the shared map (`spatial_scale` = 1 / its stride).
pub fn pool(s: &HeadSettings, features: &Tensor, boxes: &[Tensor], spatial_scale: f64) -> Result<Tensor> {
    let rois: Vec<Tensor> = boxes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Tensor::cat(
                &[b.new_full([b.size()[0], 1], i as f64, (b.kind(), b.device())), b.shallow_clone()],
                1,
            )
        })
        .collect();
    roi_pool(features, &Tensor::cat(&rois, 0), s.pooled, spatial_scale)
}

/// The head's losses: cross-entropy over the sampled regions, and smooth L1 (beta 1/9) of the
/// foreground regions' deltas for their own class, summed and divided by the sampled regions.
pub fn losses(logits: &Tensor, deltas: &Tensor, samples: &Samples) -> (Tensor, Tensor) {
    let labels = Tensor::cat(&samples.labels, 0);
    let targets = Tensor::cat(&samples.targets, 0);
    let classification = logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, -100, 0.0);
    let pos = labels.gt(0).nonzero().squeeze_dim(1);
    let n = logits.size()[0];
    let deltas = deltas.reshape([n, -1, 4]);
    let chosen = deltas.index(&[Some(pos.shallow_clone()), Some(labels.index_select(0, &pos))]);
    let boxes = chosen.smooth_l1_loss(&targets.index_select(0, &pos), Reduction::Sum, 1.0 / 9.0)
        / labels.numel() as f64;
    (classification, boxes)
}

/// Detections from the predictor's outputs for `proposals` (per image) in images of `sizes`.
pub fn detect(
    s: &HeadSettings,
    logits: &Tensor,
    deltas: &Tensor,
    proposals: &[Tensor],
    sizes: &[(i64, i64)],
) -> Result<Vec<Detections>> {
    ensure!(
        proposals.len() == sizes.len(),
        "{} images of proposals for {} image sizes",
        proposals.len(),
        sizes.len()
    );
    let classes = logits.size()[1];
    ensure!(classes >= 2, "{classes} classes: the background and at least one more expected");
    let boxes = BoxCoder::HEAD.decode(deltas, &Tensor::cat(proposals, 0))?.reshape([-1, classes, 4]);
    let scores = logits.softmax(-1, logits.kind());
    let mut out = Vec::new();
    let mut start = 0;
    for (p, &size) in proposals.iter().zip(sizes) {
        let n = p.size()[0];
        let b = clip_to_image(&boxes.narrow(0, start, n), size).narrow(1, 1, classes - 1).reshape([-1, 4]);
        let sc = scores.narrow(0, start, n).narrow(1, 1, classes - 1).reshape([-1]);
        let labels = Tensor::arange_start(1, classes, (Kind::Int64, p.device())).repeat([n]);
        start += n;
        let keep = sc.gt(s.score_threshold).nonzero().squeeze_dim(1);
        let (b, sc, labels) =
            (b.index_select(0, &keep), sc.index_select(0, &keep), labels.index_select(0, &keep));
        let keep = keep_large(&b, s.min_size);
        let (b, sc, labels) =
            (b.index_select(0, &keep), sc.index_select(0, &keep), labels.index_select(0, &keep));
        let keep = batched_nms(&b, &sc, &labels, s.nms_threshold)?;
        let keep = keep.narrow(0, 0, s.per_image.min(keep.size()[0]));
        out.push(Detections {
            boxes: b.index_select(0, &keep),
            scores: sc.index_select(0, &keep),
            labels: labels.index_select(0, &keep),
        });
    }
    Ok(out)
}
