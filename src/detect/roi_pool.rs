//! RoI max pooling (Fast R-CNN, Sec. 2.1): each region of the feature map cut into a fixed grid of
//! bins, each bin the maximum of the positions it covers. The bins are computed as torchvision's
//! `roi_pool` computes them (the region's corners scaled and rounded to whole positions, bin `i`
//! of `n` covering `[floor(i s), ceil((i + 1) s))` with `s` = region size / n in the features'
//! float type, clipped to the map, an empty bin 0), so the outputs are the same values
//! (tests/detect.rs). The maximum is taken with tensor operations (gather, mask, max), which makes
//! it run on any device and differentiable: the gradient goes to the position of each bin's
//! maximum, as torchvision's backward sends it.

use anyhow::{Result, bail, ensure};
use tch::{Device, Kind, Tensor};

/// A bin's range of positions along one axis, `[start, end)`, already clipped to the map.
type Span = (i64, i64);

/// Pools `rois` (`[K, 5]`: image index in the batch, then `(x1, y1, x2, y2)` in image pixels) from
/// `features` (`[N, C, H, W]`, `spatial_scale` map positions per image pixel, 1/16 for the C4
/// map) into `[K, C, out.0, out.1]`.
pub fn roi_pool(features: &Tensor, rois: &Tensor, out: (i64, i64), spatial_scale: f64) -> Result<Tensor> {
    let fs = features.size();
    ensure!(fs.len() == 4, "features of shape {fs:?}: [N, C, H, W] expected");
    ensure!(rois.dim() == 2 && rois.size()[1] == 5, "rois of shape {:?}: [K, 5] expected", rois.size());
    ensure!(out.0 > 0 && out.1 > 0, "pooled size {out:?}");
    ensure!(
        rois.kind() == features.kind(),
        "rois of {:?} for features of {:?}",
        rois.kind(),
        features.kind()
    );
    let (n, c, h, w) = (fs[0], fs[1], fs[2], fs[3]);
    let k = rois.size()[0];
    if k == 0 {
        return Ok(features.new_zeros([0, c, out.0, out.1], (features.kind(), features.device())));
    }
    let bins = bins(rois, out, spatial_scale, (h, w))?;
    for &(b, _, _) in &bins {
        ensure!((0..n).contains(&b), "a region of image {b} in a batch of {n}");
    }
    // [C, N*H*W]: every region's positions gathered from one flat row per channel.
    let flat = features.permute([1, 0, 2, 3]).reshape([c, -1]);
    // Regions in chunks of about 2^26 gathered values (256 MiB of float32).
    let per_region = (c * out.0 * out.1 * (h / out.0 + 2) * (w / out.1 + 2)).max(1);
    let chunk = ((1i64 << 26) / per_region).max(1) as usize;
    let pooled: Vec<Tensor> = bins.chunks(chunk).map(|b| pool_chunk(&flat, b, out, (h, w))).collect();
    Ok(Tensor::cat(&pooled, 0))
}

/// The pooled `[K', C, out.0, out.1]` of a chunk of regions from the flat `[C, N*H*W]` features.
fn pool_chunk(flat: &Tensor, bins: &[Region], out: (i64, i64), hw: (i64, i64)) -> Tensor {
    let (c, k) = (flat.size()[0], bins.len() as i64);
    // The largest bin fixes the gather's window; positions past a bin's end are masked out.
    let kh = bins.iter().flat_map(|b| b.1.iter().map(|s| s.1 - s.0)).max().unwrap_or(0).max(1);
    let kw = bins.iter().flat_map(|b| b.2.iter().map(|s| s.1 - s.0)).max().unwrap_or(0).max(1);
    let (index, valid) = windows(bins, hw, (kh, kw));
    let (kind, device) = (flat.kind(), flat.device());
    let index = Tensor::from_slice(&index).to_device(device);
    let valid = Tensor::from_slice(&valid).to_device(device).reshape([1, k, out.0, out.1, kh * kw]);
    let gathered = flat.index_select(1, &index).reshape([c, k, out.0, out.1, kh * kw]);
    let lowest = Tensor::full([1], f64::NEG_INFINITY, (kind, device));
    let (max, _) = gathered.where_self(&valid, &lowest).max_dim(4, false);
    // An empty bin (no valid position) pools to 0, as torchvision's.
    let empty = valid.any_dim(4, false);
    let pooled = max.where_self(&empty, &Tensor::zeros([1], (kind, device)));
    pooled.permute([1, 0, 2, 3])
}

/// A region's image in the batch, and the clipped spans of its bins along y and x.
type Region = (i64, Vec<Span>, Vec<Span>);

/// Every region's bins.
fn bins(rois: &Tensor, out: (i64, i64), scale: f64, (h, w): (i64, i64)) -> Result<Vec<Region>> {
    let cpu = rois.to_device(Device::Cpu).contiguous().reshape([-1]);
    match rois.kind() {
        Kind::Float => {
            let r = Vec::<f32>::try_from(cpu)?;
            Ok(r.chunks(5).map(|r| region(r, scale as f32, out, (h, w))).collect())
        }
        Kind::Double => {
            let r = Vec::<f64>::try_from(cpu)?;
            Ok(r.chunks(5).map(|r| region(r, scale, out, (h, w))).collect())
        }
        k => bail!("rois of {k:?}: float32 or float64 expected"),
    }
}

/// One region's bins, in its own float type `T` (the rounding is torchvision's: `round` half away
/// from zero, then `floor`/`ceil` of `T` products).
fn region<T: Float>(r: &[T], scale: T, out: (i64, i64), (h, w): (i64, i64)) -> Region {
    let start_x = (r[1] * scale).round_i();
    let start_y = (r[2] * scale).round_i();
    let end_x = (r[3] * scale).round_i();
    let end_y = (r[4] * scale).round_i();
    let spans = |start: i64, end: i64, n: i64, limit: i64| -> Vec<Span> {
        let size = T::from_i64((end - start + 1).max(1));
        let bin = size / T::from_i64(n);
        (0..n)
            .map(|i| {
                let lo = (T::from_i64(i) * bin).floor_i() + start;
                let hi = (T::from_i64(i + 1) * bin).ceil_i() + start;
                (lo.clamp(0, limit), hi.clamp(0, limit))
            })
            .collect()
    };
    // The image index is truncated to an integer, as torchvision's kernel does.
    (r[0].trunc_i(), spans(start_y, end_y, out.0, h), spans(start_x, end_x, out.1, w))
}

/// The flat positions (into `[N*H*W]`) each bin's window reads, and which of them lie in the bin.
fn windows(bins: &[Region], (h, w): (i64, i64), (kh, kw): (i64, i64)) -> (Vec<i64>, Vec<bool>) {
    let mut index = Vec::new();
    let mut valid = Vec::new();
    for (b, ys, xs) in bins {
        for &(y0, y1) in ys {
            for &(x0, x1) in xs {
                for dy in 0..kh {
                    for dx in 0..kw {
                        let (y, x) = (y0 + dy, x0 + dx);
                        let inside = y < y1 && x < x1;
                        valid.push(inside);
                        index.push(if inside { (b * h + y) * w + x } else { 0 });
                    }
                }
            }
        }
    }
    (index, valid)
}

/// The float operations a region's bins take, in float32 or float64.
trait Float: Copy + std::ops::Mul<Output = Self> + std::ops::Div<Output = Self> {
    fn from_i64(v: i64) -> Self;
    fn round_i(self) -> i64;
    fn trunc_i(self) -> i64;
    fn floor_i(self) -> i64;
    fn ceil_i(self) -> i64;
}

macro_rules! float {
    ($t:ty) => {
        impl Float for $t {
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn round_i(self) -> i64 {
                self.round() as i64
            }
            fn trunc_i(self) -> i64 {
                self as i64
            }
            fn floor_i(self) -> i64 {
                self.floor() as i64
            }
            fn ceil_i(self) -> i64 {
                self.ceil() as i64
            }
        }
    };
}
float!(f32);
float!(f64);
