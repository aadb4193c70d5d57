//! The RPN's anchors (Ren et al. 2015, Sec. 3.1.1): at every position of the feature map, one box
//! per (aspect ratio, scale), centred on the position's top-left pixel in the image (torchvision's
//! convention). The paper's C4 detector has one feature map (stride 16) and 3 scales x 3 ratios:
//! 128², 256², 512² for PASCAL VOC; COCO adds 64².

use anyhow::{Result, ensure};
use tch::{Device, Kind, Tensor};

/// Anchor sizes (the side of a square anchor of the same area, in pixels) and aspect ratios
/// (height / width) of one feature map.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchors {
    pub sizes: Vec<f64>,
    pub ratios: Vec<f64>,
}

impl Anchors {
    /// PASCAL VOC's anchors in the paper: 128², 256², 512² at ratios 1:2, 1:1, 2:1.
    pub fn voc() -> Self {
        Anchors { sizes: vec![128.0, 256.0, 512.0], ratios: vec![0.5, 1.0, 2.0] }
    }

    /// COCO's: 64² added (Appendix A, "the anchors of scales 64², 128², 256², 512²").
    pub fn coco() -> Self {
        Anchors { sizes: vec![64.0, 128.0, 256.0, 512.0], ratios: vec![0.5, 1.0, 2.0] }
    }

    /// Anchors per feature-map position.
    pub fn per_position(&self) -> usize {
        self.sizes.len() * self.ratios.len()
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            !self.sizes.is_empty() && !self.ratios.is_empty(),
            "anchors need at least one size and one ratio"
        );
        for &v in self.sizes.iter().chain(&self.ratios) {
            ensure!(v.is_finite() && v > 0.0, "anchor sizes and ratios must be positive, got {v}");
        }
        Ok(())
    }

    /// The anchors of one position at the origin, `[A, 4]`, ratios outer and sizes inner, each
    /// `(-w/2, -h/2, w/2, h/2)` rounded to whole pixels with `h/w` the ratio, computed in float32
    /// as torchvision does (its cell anchors are made in float32 whatever the features' type).
    pub fn cell(&self) -> Tensor {
        let sizes = Tensor::from_slice(&self.sizes).to_kind(Kind::Float);
        let ratios = Tensor::from_slice(&self.ratios).to_kind(Kind::Float);
        let h_ratios = ratios.sqrt();
        let w_ratios = h_ratios.reciprocal();
        let ws = (w_ratios.unsqueeze(1) * sizes.unsqueeze(0)).reshape([-1]);
        let hs = (h_ratios.unsqueeze(1) * sizes.unsqueeze(0)).reshape([-1]);
        (Tensor::stack(&[-&ws, -&hs, ws, hs], 1) / 2.0).round()
    }

    /// Every anchor of a `grid` = (height, width) feature map whose positions are `stride` =
    /// (sy, sx) image pixels apart: `[H * W * A, 4]` of `kind` on `device`, position-major
    /// (row, then column, then the cell's anchors), the order of the RPN's outputs.
    pub fn grid(&self, grid: (i64, i64), stride: (i64, i64), kind: Kind, device: Device) -> Tensor {
        let (h, w) = grid;
        let shift_x = Tensor::arange(w, (Kind::Int64, device)) * stride.1;
        let shift_y = Tensor::arange(h, (Kind::Int64, device)) * stride.0;
        let yx = Tensor::meshgrid_indexing(&[shift_y, shift_x], "ij");
        let (sy, sx) = (yx[0].reshape([-1]), yx[1].reshape([-1]));
        let shifts = Tensor::stack(&[&sx, &sy, &sx, &sy], 1);
        let cell = self.cell().to_kind(kind).to_device(device);
        (shifts.unsqueeze(1) + cell.unsqueeze(0)).reshape([-1, 4])
    }
}

/// The stride of a feature map over an image as torchvision's anchor generator takes it: the
/// (padded) image size divided by the map size, rounded down.
pub fn stride_of(image: (i64, i64), grid: (i64, i64)) -> (i64, i64) {
    (image.0 / grid.0, image.1 / grid.1)
}
