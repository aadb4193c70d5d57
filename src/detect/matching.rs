//! Matching boxes to ground truth and sampling the training batch of the RPN and the head (Ren et
//! al. 2015, Sec. 3.1.2; Fast R-CNN, Sec. 2.3), as torchvision's `Matcher` and
//! `BalancedPositiveNegativeSampler` do them.

use anyhow::{Result, ensure};
use tch::{Kind, Tensor};

/// A box's match: the index of its ground-truth box, or one of these.
pub const BELOW_LOW: i64 = -1;
/// Between the thresholds: neither positive nor negative (ignored by the loss).
pub const BETWEEN: i64 = -2;

/// IoU thresholds: a box is matched to its best ground truth at IoU >= `high`, background below
/// `low`, ignored between. With `low_quality`, each ground truth also keeps the boxes that overlap
/// it most even below `high` (the RPN's rule (i) in Ren et al.: "the anchor with the highest IoU").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matcher {
    pub high: f64,
    pub low: f64,
    pub low_quality: bool,
}

impl Matcher {
    /// The RPN's: positive at 0.7, negative below 0.3, and each ground truth's best anchors.
    pub const RPN: Matcher = Matcher { high: 0.7, low: 0.3, low_quality: true };
    /// The head's (Fast R-CNN): foreground at 0.5, background below 0.5.
    pub const HEAD: Matcher = Matcher { high: 0.5, low: 0.5, low_quality: false };

    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.low) && (0.0..=1.0).contains(&self.high) && self.low <= self.high,
            "IoU thresholds low {} and high {}: 0 <= low <= high <= 1 expected",
            self.low,
            self.high
        );
        Ok(())
    }

    /// For `quality` (`[M ground truths, N boxes]` of IoU), each box's match (`[N]`, int64).
    pub fn assign(&self, quality: &Tensor) -> Result<Tensor> {
        let s = quality.size();
        ensure!(s[0] > 0, "no ground-truth boxes to match (an image without objects needs no matching)");
        ensure!(s[1] > 0, "no boxes to match with the ground truth");
        let (best, matches) = quality.max_dim(0, false);
        let all = matches.copy();
        let below = best.lt(self.low);
        let between = best.ge(self.low).logical_and(&best.lt(self.high));
        let mut matches = matches.masked_fill(&below, BELOW_LOW).masked_fill(&between, BETWEEN);
        if self.low_quality {
            // Every box tied for a ground truth's best IoU takes its own best match back.
            let (highest, _) = quality.max_dim(1, true);
            let boxes = quality.eq_tensor(&highest).nonzero().select(1, 1);
            matches = matches.index_put(&[Some(&boxes)], &all.index_select(0, &boxes), false);
        }
        Ok(matches)
    }
}

/// `values` (a box's class, or 1 for "an object") with the background (matches below the low
/// threshold) set to 0 and the ignored boxes (between the thresholds) to -1: the labels the
/// losses and the sampler read.
pub fn labels(values: &Tensor, matches: &Tensor) -> Tensor {
    values.masked_fill(&matches.eq(BELOW_LOW), 0).masked_fill(&matches.eq(BETWEEN), -1)
}

/// A balanced training batch: up to `per_image x positive_fraction` positives drawn at random
/// (libtorch's generator, as torchvision draws them), the rest of `per_image` negatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    pub per_image: i64,
    pub positive_fraction: f64,
}

impl Sampler {
    /// The RPN's: 256 anchors per image, up to half positive.
    pub const RPN: Sampler = Sampler { per_image: 256, positive_fraction: 0.5 };
    /// The head's: 512 regions per image (torchvision's; Fast R-CNN took 64 of 2 images' 128), up to
    /// a quarter foreground.
    pub const HEAD: Sampler = Sampler { per_image: 512, positive_fraction: 0.25 };

    pub fn validate(&self) -> Result<()> {
        ensure!(self.per_image > 0, "{} boxes sampled per image: at least 1 expected", self.per_image);
        ensure!(
            (0.0..=1.0).contains(&self.positive_fraction),
            "a positive fraction of {}: between 0 and 1 expected",
            self.positive_fraction
        );
        Ok(())
    }

    /// Masks (`[N]`, bool) of the positives and negatives drawn from `labels` (`[N]`: >= 1
    /// positive, 0 negative, < 0 ignored).
    pub fn sample(&self, labels: &Tensor) -> (Tensor, Tensor) {
        let positive = labels.ge(1).nonzero().squeeze_dim(1);
        let negative = labels.eq(0).nonzero().squeeze_dim(1);
        let pos_n = ((self.per_image as f64 * self.positive_fraction) as i64).min(positive.size()[0]);
        let neg_n = (self.per_image - pos_n).min(negative.size()[0]);
        let draw = |from: &Tensor, n: i64| {
            let perm = Tensor::randperm(from.size()[0], (Kind::Int64, from.device())).narrow(0, 0, n);
            let mask = labels.zeros_like().to_kind(Kind::Bool);
            mask.index_fill(0, &from.index_select(0, &perm), 1)
        };
        let pos = draw(&positive, pos_n);
        let neg = draw(&negative, neg_n);
        (pos, neg)
    }
}
