//! Boxes as Faster R-CNN uses them: `[N, 4]` tensors of `(x1, y1, x2, y2)` in pixels, width `x2 - x1`
//! (no "+1", as torchvision), and the box coding of the RPN and the head (Ren et al. 2015, eq. 2):
//! a box relative to a reference as `(wx dx, wy dy, ww log(w / w_ref), wh log(h / h_ref))`. Each
//! function computes what torchvision's function of the same name does, in the same order of
//! operations, so that float64 results are equal (tests/detect.rs).

use anyhow::{Result, ensure};
use tch::Tensor;

/// Area of each box of `[N, 4]`.
pub fn box_area(boxes: &Tensor) -> Tensor {
    (boxes.select(1, 2) - boxes.select(1, 0)) * (boxes.select(1, 3) - boxes.select(1, 1))
}

/// Intersection over union of every box of `a` (`[N, 4]`) with every box of `b` (`[M, 4]`): `[N, M]`.
pub fn box_iou(a: &Tensor, b: &Tensor) -> Tensor {
    let (area_a, area_b) = (box_area(a), box_area(b));
    let a = a.unsqueeze(1);
    let lt = a.narrow(2, 0, 2).maximum(&b.narrow(1, 0, 2));
    let rb = a.narrow(2, 2, 2).minimum(&b.narrow(1, 2, 2));
    let wh = (rb - lt).clamp_min(0.0);
    let inter = wh.select(2, 0) * wh.select(2, 1);
    let union = area_a.unsqueeze(1) + area_b.unsqueeze(0) - &inter;
    inter / union
}

/// Boxes clipped to an image of `(height, width)`; any shape `[..., 4k]`.
pub fn clip_to_image(boxes: &Tensor, (height, width): (i64, i64)) -> Tensor {
    let size = boxes.size();
    let last = *size.last().unwrap_or(&0);
    let pairs = boxes.reshape([-1, last / 2, 2]);
    let x = pairs.select(2, 0).clamp(0.0, width as f64);
    let y = pairs.select(2, 1).clamp(0.0, height as f64);
    Tensor::stack(&[x, y], 2).reshape(size)
}

/// Indices of the boxes whose both sides are at least `min_size`.
pub fn keep_large(boxes: &Tensor, min_size: f64) -> Tensor {
    let w = boxes.select(1, 2) - boxes.select(1, 0);
    let h = boxes.select(1, 3) - boxes.select(1, 1);
    w.ge(min_size).logical_and(&h.ge(min_size)).nonzero().squeeze_dim(1)
}

/// The box coding: weights for `(dx, dy, dw, dh)` and the largest `dw`, `dh` decoded (so that
/// `exp` cannot overflow), `log(1000 / 16)` as in Detectron and torchvision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxCoder {
    pub weights: [f64; 4],
    pub clip: f64,
}

impl BoxCoder {
    /// The RPN's coding: weights 1.
    pub const RPN: BoxCoder = BoxCoder { weights: [1.0, 1.0, 1.0, 1.0], clip: 4.135166556742356 };
    /// The detection head's coding: weights (10, 10, 5, 5), i.e. targets divided by (0.1, 0.1,
    /// 0.2, 0.2), the normalisation of Fast R-CNN's regression targets.
    pub const HEAD: BoxCoder = BoxCoder { weights: [10.0, 10.0, 5.0, 5.0], clip: 4.135166556742356 };

    /// The codes `[N, 4]` of `targets` relative to `references` (both `[N, 4]`).
    pub fn encode(&self, targets: &Tensor, references: &Tensor) -> Result<Tensor> {
        ensure!(
            targets.size() == references.size(),
            "encoding {:?} boxes against {:?}",
            targets.size(),
            references.size()
        );
        let [wx, wy, ww, wh] = self.weights;
        let (rx, ry, rw, rh) = centres(references);
        let (tx, ty, tw, th) = centres(targets);
        let dx = (tx - &rx) * wx / &rw;
        let dy = (ty - &ry) * wy / &rh;
        let dw = (tw / rw).log() * ww;
        let dh = (th / rh).log() * wh;
        Ok(Tensor::stack(&[dx, dy, dw, dh], 1))
    }

    /// The boxes `[N, 4k]` that `codes` (`[N, 4k]`, k boxes per reference, e.g. one per class)
    /// describe relative to `references` (`[N, 4]`).
    pub fn decode(&self, codes: &Tensor, references: &Tensor) -> Result<Tensor> {
        let (c, r) = (codes.size(), references.size());
        ensure!(
            c.len() == 2 && r.len() == 2 && c[0] == r[0] && c[1] % 4 == 0 && r[1] == 4,
            "decoding codes of shape {c:?} against boxes of shape {r:?}: [N, 4k] and [N, 4] expected"
        );
        if c[0] == 0 {
            return Ok(codes.zeros_like());
        }
        let n = c[0];
        let codes = codes.reshape([n, -1, 4]);
        let references = references.to_kind(codes.kind());
        let [wx, wy, ww, wh] = self.weights;
        let (cx, cy, w, h) = centres(&references);
        let (cx, cy, w, h) = (cx.unsqueeze(1), cy.unsqueeze(1), w.unsqueeze(1), h.unsqueeze(1));
        let dx = codes.select(2, 0) / wx;
        let dy = codes.select(2, 1) / wy;
        let dw = (codes.select(2, 2) / ww).clamp_max(self.clip);
        let dh = (codes.select(2, 3) / wh).clamp_max(self.clip);
        let px = dx * &w + cx;
        let py = dy * &h + cy;
        let half_w = (dw.exp() * w) * 0.5;
        let half_h = (dh.exp() * h) * 0.5;
        Ok(Tensor::stack(&[&px - &half_w, &py - &half_h, &px + &half_w, &py + &half_h], 2).flatten(1, 2))
    }
}

/// Centre x, centre y, width and height of each box, computed as torchvision does (`x1 + 0.5 w`).
fn centres(boxes: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    let (x1, y1) = (boxes.select(1, 0), boxes.select(1, 1));
    let w = boxes.select(1, 2) - &x1;
    let h = boxes.select(1, 3) - &y1;
    (x1 + &w * 0.5, y1 + &h * 0.5, w, h)
}
