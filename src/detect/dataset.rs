//! What a detector trains and is tested on: a set of images with their ground truth, read a
//! batch at a time (normalised, padded to one size, flipped when asked, boxes flipped with them).
//! The Fashion-MNIST scenes (`scenes`) are one.

use super::head::Target;
use anyhow::Result;
use tch::{Device, Tensor};

/// Images ready for the detector: float, normalised, padded to one size.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub sizes: Vec<(i64, i64)>,
    pub targets: Vec<Target>,
}

/// A detection dataset: images by index, flipped when asked (boxes with them).
pub trait DetectionSet {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn batch(&self, indices: &[usize], flips: &[bool], device: Device) -> Result<Batch>;
}

/// Boxes `[M, 4]` mirrored in an image `width` wide.
pub fn flip_boxes(boxes: &Tensor, width: i64) -> Tensor {
    let (x1, x2) = (boxes.select(1, 0), boxes.select(1, 2));
    Tensor::stack(&[-x2 + width as f64, boxes.select(1, 1), -x1 + width as f64, boxes.select(1, 3)], 1)
}
