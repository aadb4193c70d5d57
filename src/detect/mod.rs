//! Object detection, the paper's Sec. 4.3 and Appendix A: Faster R-CNN (Ren et al. 2015) on the
//! suite's networks in the C4 design (conv1..conv4_x shared, conv5_x per region). A file per
//! concept: box arithmetic and coding (`boxes`), the RPN's anchors (`anchors`), matching to the
//! ground truth and sampling (`matching`), non-maximum suppression (`nms`), RoI max pooling
//! (`roi_pool`), the region proposal network (`rpn`), the per-region head (`head`) and the
//! detector that joins them to a backbone (`detector`). Scoring: PASCAL VOC's average precision
//! (`voc_ap`) and COCO's (`coco_ap`, pycocotools'), both of a detector's output (`score`). Data
//! (`dataset`): scenes of Fashion-MNIST items (`scenes`); PASCAL VOC's and COCO's annotations
//! (`voc`, `coco`) and their images as the paper feeds them (`images`). Training (`train`). Each part equals torchvision's (or pycocotools') function of the same name on the
//! same inputs (tests/detect.rs: float64, and float32 for NMS and RoI pooling).

pub mod anchors;
pub mod boxes;
pub mod coco;
pub mod coco_ap;
pub mod dataset;
pub mod detector;
pub mod head;
pub mod images;
pub mod matching;
pub mod nms;
pub mod roi_pool;
pub mod rpn;
pub mod scenes;
pub mod score;
pub mod settings;
pub mod train;
pub mod voc;
pub mod voc_ap;

pub use anchors::Anchors;
pub use boxes::{BoxCoder, box_area, box_iou, clip_to_image, keep_large};
pub use dataset::{Batch, DetectionSet};
pub use detector::{FasterRcnn, Losses, Pass};
pub use head::{Detections, HeadSettings, Target};
pub use matching::{Matcher, Sampler};
pub use nms::{batched_nms, nms};
pub use roi_pool::roi_pool;
pub use rpn::{Rpn, RpnLosses, RpnSettings};
pub use voc_ap::{ApMetric, average_precision};
