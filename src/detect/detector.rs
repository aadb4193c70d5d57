//! Faster R-CNN in the paper's C4 design (Appendix A): a ResNet's conv1 to conv4_x shared (stride
//! 16 on ImageNet nets), the RPN on that map, RoI pooling on it, conv5_x run on each region (its
//! first block with stride 2), global average pooling and the predictor. BN runs in inference
//! mode with the backbone's statistics, as the paper's frozen BN (`train::freeze` leaves BN's
//! scale and shift out of the update); a backbone from scratch may train its BN (`train_bn`). The CIFAR nets split the
//! same way at their last stage (conv1 and stages 1-2 shared, stride 2; stage 3 per region).
//! Variable names: `backbone.*` (the network's own, torchvision's), `rpn.*`,
//! `roi_heads.box_predictor.*`, torchvision's `FasterRCNN`'s.

use super::head::{self, Detections, HeadSettings, Predictor, Target};
use super::rpn::{Rpn, RpnLosses, RpnSettings};
use crate::models::ResNet;
use anyhow::{Result, ensure};
use tch::{Tensor, nn};

/// The four losses of a training step (Faster R-CNN's joint training sums them).
#[derive(Debug)]
pub struct Losses {
    pub rpn: RpnLosses,
    pub classification: Tensor,
    pub boxes: Tensor,
}

impl Losses {
    pub fn total(&self) -> Tensor {
        &self.rpn.objectness + &self.rpn.boxes + &self.classification + &self.boxes
    }
}

/// Everything one pass computed, stage by stage (what tests/detect.rs compares with torchvision).
#[derive(Debug)]
pub struct Pass {
    /// The shared map `[N, C, H, W]`.
    pub features: Tensor,
    /// The RPN's proposals per image.
    pub proposals: Vec<Tensor>,
    /// The regions pooled: the proposals (testing) or the sampled ones (training).
    pub regions: Vec<Tensor>,
    /// RoI pooling's output `[K, C, ph, pw]`.
    pub pooled: Tensor,
    pub logits: Tensor,
    pub deltas: Tensor,
    /// Testing: the detections per image.
    pub detections: Vec<Detections>,
    /// Training: the losses.
    pub losses: Option<Losses>,
}

#[derive(Debug)]
pub struct FasterRcnn {
    pub backbone: ResNet,
    /// Stages shared before the RoI pooling (3 on ImageNet nets: conv2_x..conv4_x).
    pub shared: usize,
    pub rpn: Rpn,
    pub predictor: Predictor,
    pub head: HeadSettings,
    /// The shared map's stride in input pixels (16 for ImageNet nets).
    pub stride: i64,
    /// BN normalises with each training batch's statistics (and updates its running ones) instead
    /// of running frozen: for a backbone trained from scratch, which has no statistics to freeze
    /// (He et al. 2018 train such detectors with synchronised BN or GN). Off by default (the paper's).
    pub train_bn: bool,
}

impl FasterRcnn {
    /// A detector of `num_classes` classes (the background included) on `backbone`, built in
    /// `p / "backbone"` by the caller (its last stage becomes the per-region head).
    pub fn new(
        p: &nn::Path,
        backbone: ResNet,
        num_classes: i64,
        rpn: RpnSettings,
        head: HeadSettings,
    ) -> Result<Self> {
        let stages = backbone.stages.len();
        ensure!(stages >= 2, "{}: a detector needs at least two stages", backbone.name);
        ensure!(num_classes >= 2, "{num_classes} classes: the background and at least one more expected");
        head.validate()?;
        let shared = stages - 1;
        let channels = |s: usize| {
            let c = backbone.stages[s].last().and_then(|b| b.layers.last()).map(|l| l.conv.out_channels);
            c.ok_or_else(|| anyhow::anyhow!("{}: stage {} has no layers", backbone.name, s + 1))
        };
        let (map, last) = (channels(shared - 1)?, channels(stages - 1)?);
        let stride = backbone.stride_after(shared);
        let rpn = Rpn::new(&(p / "rpn"), map, rpn)?;
        let predictor = Predictor::new(&(p / "roi_heads" / "box_predictor"), last, num_classes);
        Ok(FasterRcnn { backbone, shared, rpn, predictor, head, stride, train_bn: false })
    }

    /// One pass over `images` (`[N, 3, H, W]`, padded to a common size; each image's own size in
    /// `sizes`). With `truth`, a training pass (sampling from libtorch's generator) with losses;
    /// without, a testing pass with detections.
    pub fn forward(&self, images: &Tensor, sizes: &[(i64, i64)], truth: Option<&[Target]>) -> Result<Pass> {
        let s = images.size();
        ensure!(
            s.len() == 4 && s[0] == sizes.len() as i64,
            "{} sizes for images of shape {s:?}",
            sizes.len()
        );
        if let Some(t) = truth {
            ensure!(t.len() == sizes.len(), "{} targets for {} images", t.len(), sizes.len());
            for (i, t) in t.iter().enumerate() {
                t.validate(sizes[i]).map_err(|e| e.context(format!("the ground truth of image {i}")))?;
            }
        }
        let train = truth.is_some();
        // BN frozen: the backbone runs in inference mode, unless it trains its BN.
        let bn = train && self.train_bn;
        let features = self.backbone.stages_t(&self.backbone.stem_t(images, bn), 0..self.shared, bn);
        let targets: Option<Vec<Tensor>> = truth.map(|t| t.iter().map(|t| t.boxes.shallow_clone()).collect());
        let (proposals, rpn_losses) =
            self.rpn.forward(&features, (s[2], s[3]), sizes, targets.as_deref(), train)?;
        let samples = truth.map(|t| head::sample(&self.head, &proposals, t)).transpose()?;
        let regions: Vec<Tensor> =
            samples.as_ref().map_or(&proposals, |s| &s.proposals).iter().map(|p| p.shallow_clone()).collect();
        let pooled = head::pool(&self.head, &features, &regions, 1.0 / self.stride as f64)?;
        let all = self.backbone.stages.len();
        let h = self.backbone.stages_t(&pooled, self.shared..all, bn);
        let (logits, deltas) = self.predictor.forward(&h.mean_dim([2i64, 3].as_slice(), false, h.kind()));
        let (detections, losses) = match (&samples, rpn_losses) {
            (Some(samples), Some(rpn)) => {
                let (classification, boxes) = head::losses(&logits, &deltas, samples);
                (Vec::new(), Some(Losses { rpn, classification, boxes }))
            }
            _ => (head::detect(&self.head, &logits, &deltas, &regions, sizes)?, None),
        };
        Ok(Pass { features, proposals, regions, pooled, logits, deltas, detections, losses })
    }
}
