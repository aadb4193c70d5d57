//! The Region Proposal Network (Ren et al. 2015, Sec. 3.1) on one feature map, as torchvision's
//! `RegionProposalNetwork` with an `RPNHead`: a 3x3 conv and ReLU, then per anchor an objectness
//! logit (a sigmoid, torchvision's form of the paper's two-way softmax) and 4 box deltas. Its
//! proposals: the top-scoring anchors decoded, clipped to the image, tiny boxes dropped, NMS at
//! 0.7, the best kept. Its loss: objectness cross-entropy and smooth L1 over 256 sampled anchors a
//! image. Variable names are torchvision's (`head.conv.0.0`, `head.cls_logits`, `head.bbox_pred`).

use super::anchors::{Anchors, stride_of};
use super::boxes::{BoxCoder, box_iou, clip_to_image, keep_large};
use super::matching::{self, Matcher, Sampler};
use super::nms::batched_nms;
use anyhow::{Result, ensure};
use tch::{Reduction, Tensor, nn};

/// The RPN's settings, torchvision's defaults but for the paper's 300 test proposals.
#[derive(Debug, Clone, PartialEq)]
pub struct RpnSettings {
    pub anchors: Anchors,
    /// Anchors kept by score before NMS, training and testing.
    pub pre_nms_top_n: (i64, i64),
    /// Proposals kept after NMS, training and testing (the paper tests with 300).
    pub post_nms_top_n: (i64, i64),
    pub nms_threshold: f64,
    /// Proposals with a side shorter than this (pixels) are dropped.
    pub min_size: f64,
    /// Proposals whose objectness (a probability) is below this are dropped.
    pub score_threshold: f64,
    pub matcher: Matcher,
    pub sampler: Sampler,
}

impl Default for RpnSettings {
    fn default() -> Self {
        RpnSettings {
            anchors: Anchors::voc(),
            pre_nms_top_n: (2000, 1000),
            post_nms_top_n: (2000, 300),
            nms_threshold: 0.7,
            min_size: 1e-3,
            score_threshold: 0.0,
            matcher: Matcher::RPN,
            sampler: Sampler::RPN,
        }
    }
}

impl RpnSettings {
    pub fn validate(&self) -> Result<()> {
        self.anchors.validate()?;
        self.matcher.validate()?;
        self.sampler.validate()?;
        let (pre, post) = (self.pre_nms_top_n, self.post_nms_top_n);
        ensure!(
            pre.0 > 0 && pre.1 > 0 && post.0 > 0 && post.1 > 0,
            "RPN top-n {pre:?} before NMS and {post:?} after (training, testing): positive expected"
        );
        ensure!((0.0..=1.0).contains(&self.nms_threshold), "an RPN NMS threshold of {}", self.nms_threshold);
        Ok(())
    }
}

/// The RPN's two losses, each a scalar.
#[derive(Debug)]
pub struct RpnLosses {
    pub objectness: Tensor,
    pub boxes: Tensor,
}

#[derive(Debug)]
pub struct Rpn {
    conv: nn::Conv2D,
    cls_logits: nn::Conv2D,
    bbox_pred: nn::Conv2D,
    pub settings: RpnSettings,
}

impl Rpn {
    /// An RPN over `channels`-deep features, its convs drawn from N(0, 0.01²) with zero biases.
    pub fn new(p: &nn::Path, channels: i64, settings: RpnSettings) -> Result<Rpn> {
        settings.validate()?;
        let a = settings.anchors.per_position() as i64;
        let init = nn::ConvConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.01 },
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        let head = p / "head";
        let conv = nn::conv2d(
            &head / "conv" / "0" / "0",
            channels,
            channels,
            3,
            nn::ConvConfig { padding: 1, ..init },
        );
        let cls_logits = nn::conv2d(&head / "cls_logits", channels, a, 1, init);
        let bbox_pred = nn::conv2d(&head / "bbox_pred", channels, 4 * a, 1, init);
        Ok(Rpn { conv, cls_logits, bbox_pred, settings })
    }

    /// Objectness logits `[N, H*W*A]` and box deltas `[N, H*W*A, 4]`, position-major as the anchors.
    pub fn head(&self, features: &Tensor) -> (Tensor, Tensor) {
        let t = features.apply(&self.conv).relu();
        let n = features.size()[0];
        let a = self.settings.anchors.per_position() as i64;
        let flat = |x: Tensor, c: i64| {
            let s = x.size();
            x.view([n, a, c, s[2], s[3]]).permute([0, 3, 4, 1, 2]).reshape([n, -1, c])
        };
        (flat(t.apply(&self.cls_logits), 1).squeeze_dim(2), flat(t.apply(&self.bbox_pred), 4))
    }

    /// Proposals (`[P_i, 4]` per image, no gradient) for a batch of `features` computed from images
    /// padded to `padded` = (height, width) whose own sizes are `image_sizes`; with `targets`
    /// (ground-truth boxes per image) in training, also the losses.
    pub fn forward(
        &self,
        features: &Tensor,
        padded: (i64, i64),
        image_sizes: &[(i64, i64)],
        targets: Option<&[Tensor]>,
        train: bool,
    ) -> Result<(Vec<Tensor>, Option<RpnLosses>)> {
        let fs = features.size();
        ensure!(
            image_sizes.len() as i64 == fs[0],
            "{} image sizes for a batch of {}",
            image_sizes.len(),
            fs[0]
        );
        let (objectness, deltas) = self.head(features);
        let grid = (fs[2], fs[3]);
        let anchors =
            self.settings.anchors.grid(grid, stride_of(padded, grid), features.kind(), features.device());
        let proposals = self.propose(&objectness.detach(), &deltas.detach(), &anchors, image_sizes, train)?;
        let losses = match (targets, train) {
            (Some(t), true) => Some(self.losses(&objectness, &deltas, &anchors, t)?),
            (None, true) => anyhow::bail!("training the RPN needs the ground truth"),
            (_, false) => None,
        };
        Ok((proposals, losses))
    }

    /// The proposals of each image: the top `pre_nms_top_n` anchors by objectness, decoded,
    /// clipped, tiny and unlikely ones dropped, NMS, the first `post_nms_top_n`.
    fn propose(
        &self,
        objectness: &Tensor,
        deltas: &Tensor,
        anchors: &Tensor,
        image_sizes: &[(i64, i64)],
        train: bool,
    ) -> Result<Vec<Tensor>> {
        let s = &self.settings;
        let (pre, post) = if train {
            (s.pre_nms_top_n.0, s.post_nms_top_n.0)
        } else {
            (s.pre_nms_top_n.1, s.post_nms_top_n.1)
        };
        let top = pre.min(anchors.size()[0]);
        let mut out = Vec::with_capacity(image_sizes.len());
        for (i, &size) in image_sizes.iter().enumerate() {
            let (_, idx) = objectness.get(i as i64).topk(top, 0, true, true);
            let scores = objectness.get(i as i64).index_select(0, &idx).sigmoid();
            let boxes = BoxCoder::RPN
                .decode(&deltas.get(i as i64).index_select(0, &idx), &anchors.index_select(0, &idx))?;
            let boxes = clip_to_image(&boxes, size);
            let keep = keep_large(&boxes, s.min_size);
            let (boxes, scores) = (boxes.index_select(0, &keep), scores.index_select(0, &keep));
            let keep = scores.ge(s.score_threshold).nonzero().squeeze_dim(1);
            let (boxes, scores) = (boxes.index_select(0, &keep), scores.index_select(0, &keep));
            // One feature map is one level of torchvision's per-level NMS, whose two paths (up to
            // 1,000 boxes, and more) order equal scores differently.
            let level = scores.zeros_like().to_kind(tch::Kind::Int64);
            let keep = batched_nms(&boxes, &scores, &level, s.nms_threshold)?;
            let keep = keep.narrow(0, 0, post.min(keep.size()[0]));
            out.push(boxes.index_select(0, &keep));
        }
        Ok(out)
    }

    /// Objectness (binary cross-entropy, mean over the sampled anchors) and box (smooth L1 with
    /// beta 1/9, summed over the positives, divided by the sampled anchors) losses.
    fn losses(
        &self,
        objectness: &Tensor,
        deltas: &Tensor,
        anchors: &Tensor,
        targets: &[Tensor],
    ) -> Result<RpnLosses> {
        ensure!(
            targets.len() as i64 == objectness.size()[0],
            "{} targets for a batch of {}",
            targets.len(),
            objectness.size()[0]
        );
        let mut labels = Vec::new();
        let mut regression = Vec::new();
        for gt in targets {
            let (l, r) = self.anchor_targets(anchors, gt)?;
            labels.push(l);
            regression.push(r);
        }
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for l in &labels {
            let (p, n) = self.settings.sampler.sample(l);
            pos.push(p);
            neg.push(n);
        }
        let pos = Tensor::cat(&pos, 0).nonzero().squeeze_dim(1);
        let neg = Tensor::cat(&neg, 0).nonzero().squeeze_dim(1);
        let sampled = Tensor::cat(&[&pos, &neg], 0);
        let (labels, regression) = (Tensor::cat(&labels, 0), Tensor::cat(&regression, 0));
        let (objectness, deltas) = (objectness.reshape([-1]), deltas.reshape([-1, 4]));
        let boxes = deltas.index_select(0, &pos).smooth_l1_loss(
            &regression.index_select(0, &pos),
            Reduction::Sum,
            1.0 / 9.0,
        ) / sampled.size()[0] as f64;
        let objectness = objectness.index_select(0, &sampled).binary_cross_entropy_with_logits::<Tensor>(
            &labels.index_select(0, &sampled),
            None,
            None,
            Reduction::Mean,
        );
        Ok(RpnLosses { objectness, boxes })
    }

    /// Each anchor's label (1 object, 0 background, -1 ignored) and regression target.
    fn anchor_targets(&self, anchors: &Tensor, gt: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = anchors.size()[0];
        if gt.size()[0] == 0 {
            return Ok((anchors.new_zeros([n], (anchors.kind(), anchors.device())), anchors.zeros_like()));
        }
        let matches = self.settings.matcher.assign(&box_iou(gt, anchors))?;
        let matched = gt.index_select(0, &matches.clamp_min(0));
        let labels = matching::labels(&matches.ge(0).to_kind(anchors.kind()), &matches);
        Ok((labels, BoxCoder::RPN.encode(&matched, anchors)?))
    }
}
