//! A detector's settings as an experiment file states them (`[detector]`): the anchors, how many
//! proposals the RPN keeps, how many anchors and regions a training image samples, the RoI
//! pooling size. Every key defaults to the paper's Faster R-CNN (torchvision's defaults with the
//! paper's 300 test proposals and VOC's anchors); the small-scale scenes change a few.

use super::anchors::Anchors;
use super::head::HeadSettings;
use super::matching::Sampler;
use super::rpn::RpnSettings;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Anchor sides in pixels (VOC: 128, 256, 512; COCO adds 64).
    pub anchor_sizes: Vec<f64>,
    /// Anchor aspect ratios (height / width).
    pub anchor_ratios: Vec<f64>,
    /// Anchors kept by objectness before the RPN's NMS: [training, testing].
    pub rpn_pre_nms: [i64; 2],
    /// Proposals kept after it: [training, testing] (the paper tests with 300).
    pub rpn_post_nms: [i64; 2],
    /// Anchors sampled a training image for the RPN's losses (half positive at most).
    pub rpn_batch: i64,
    /// Regions sampled a training image for the head's losses (a quarter foreground at most).
    pub regions_per_image: i64,
    /// RoI pooling's output side (the last stage's first block halves it).
    pub pooled: i64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        let (rpn, head) = (RpnSettings::default(), HeadSettings::default());
        DetectorConfig {
            anchor_sizes: rpn.anchors.sizes,
            anchor_ratios: rpn.anchors.ratios,
            rpn_pre_nms: [rpn.pre_nms_top_n.0, rpn.pre_nms_top_n.1],
            rpn_post_nms: [rpn.post_nms_top_n.0, rpn.post_nms_top_n.1],
            rpn_batch: rpn.sampler.per_image,
            regions_per_image: head.sampler.per_image,
            pooled: head.pooled.0,
        }
    }
}

impl DetectorConfig {
    /// The RPN's and the head's settings, checked.
    pub fn settings(&self) -> Result<(RpnSettings, HeadSettings)> {
        let base = (RpnSettings::default(), HeadSettings::default());
        let rpn = RpnSettings {
            anchors: Anchors { sizes: self.anchor_sizes.clone(), ratios: self.anchor_ratios.clone() },
            pre_nms_top_n: (self.rpn_pre_nms[0], self.rpn_pre_nms[1]),
            post_nms_top_n: (self.rpn_post_nms[0], self.rpn_post_nms[1]),
            sampler: Sampler { per_image: self.rpn_batch, ..base.0.sampler },
            ..base.0
        };
        let head = HeadSettings {
            pooled: (self.pooled, self.pooled),
            sampler: Sampler { per_image: self.regions_per_image, ..base.1.sampler },
            ..base.1
        };
        rpn.validate()?;
        head.validate()?;
        Ok((rpn, head))
    }
}
