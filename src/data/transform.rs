//! The paper's transforms of one image (Sec. 3.4): scale augmentation, random crops and flips,
//! AlexNet's PCA colour augmentation and mean subtraction for training; the resizing and crop
//! geometry the test views (`eval::views`) and small-image folders share.

use anyhow::{Result, ensure};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use image::RgbImage;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Per-channel mean (and scale) subtracted from pixels in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// The paper subtracts the mean only (Sec. 3.4). NOTE: a per-channel mean (ImageNet's, as
    /// fb.resnet.torch uses) rather than a per-pixel mean image; BN follows the first conv.
    pub const PAPER: Normalize = Normalize { mean: [0.485, 0.456, 0.406], std: [1.0, 1.0, 1.0] };
    /// torchvision's weights expect the standard deviation divided out too.
    pub const TORCHVISION: Normalize = Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize::PAPER
    }
}

/// AlexNet's PCA colour augmentation (fb.resnet.torch's `Lighting`): each image gets
/// `eigvec * (alpha * eigval)` added to every pixel, alpha ~ N(0, std) per component.
pub const PCA_EIGVAL: [f32; 3] = [0.2175, 0.0188, 0.0045];
pub const PCA_EIGVEC: [[f32; 3]; 3] =
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]];

pub fn lighting_shift(alpha: [f32; 3]) -> [f32; 3] {
    let mut rgb = [0f32; 3];
    for (c, row) in PCA_EIGVEC.iter().enumerate() {
        rgb[c] = (0..3).map(|j| row[j] * alpha[j] * PCA_EIGVAL[j]).sum();
    }
    rgb
}

/// The training transform of Sec. 3.4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainTransform {
    /// The shorter side is resized to a random size in [min_side, max_side].
    pub min_side: u32,
    pub max_side: u32,
    pub crop: u32,
    pub flip: bool,
    /// Standard deviation of the PCA colour augmentation's alpha (0: off).
    pub lighting: f32,
    pub normalize: Normalize,
}

impl Default for TrainTransform {
    fn default() -> Self {
        TrainTransform {
            min_side: 256,
            max_side: 480,
            crop: 224,
            flip: true,
            lighting: 0.1,
            normalize: Normalize::PAPER,
        }
    }
}

/// The random choices of one training image, drawn from its own stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainDraw {
    pub side: u32,
    /// Where the crop starts in the resized image, as fractions of the free room (0..=1).
    pub crop_x: f64,
    pub crop_y: f64,
    pub flip: bool,
    pub alpha: [f32; 3],
}

impl TrainTransform {
    pub fn draw(&self, rng: &mut impl Rng) -> TrainDraw {
        let side = rng.random_range(self.min_side..=self.max_side);
        let (crop_x, crop_y) = (rng.random::<f64>(), rng.random::<f64>());
        let flip = self.flip && rng.random_bool(0.5);
        let mut alpha = [0f32; 3];
        if self.lighting > 0.0 {
            let n = Normal::new(0.0, self.lighting).expect("a finite standard deviation");
            alpha = [n.sample(rng), n.sample(rng), n.sample(rng)];
        }
        TrainDraw { side, crop_x, crop_y, flip, alpha }
    }

    /// Writes the `crop` x `crop` x 3 (HWC) float image for `img` with the draw `d` into `out`.
    pub fn apply(&self, img: &RgbImage, d: &TrainDraw, resizer: &mut Resizer, out: &mut [f32]) -> Result<()> {
        let (rw, rh) = resized_size(img.width(), img.height(), d.side);
        let c = self.crop;
        ensure!(rw >= c && rh >= c, "resized image {rw}x{rh} is smaller than the {c} crop");
        // torchvision's RandomCrop: a uniform offset in 0..=free.
        let x0 = ((d.crop_x * f64::from(rw - c + 1)).floor() as u32).min(rw - c);
        let y0 = ((d.crop_y * f64::from(rh - c + 1)).floor() as u32).min(rh - c);
        let pixels = resize_region(img, (rw, rh), (x0, y0, c, c), resizer)?;
        write_normalized(&pixels, c, c, d.flip, lighting_shift(d.alpha), &self.normalize, out);
        Ok(())
    }
}

/// torchvision's `Resize(side)`: the shorter side becomes `side`, the longer `side * long / short`
/// truncated.
pub fn resized_size(w: u32, h: u32, side: u32) -> (u32, u32) {
    if w <= h {
        (side, (u64::from(side) * u64::from(h) / u64::from(w)) as u32)
    } else {
        ((u64::from(side) * u64::from(w) / u64::from(h)) as u32, side)
    }
}

/// The pixels of region `(x, y, w, h)` of `img` resized to `resized` (bilinear with antialiasing, as
/// PIL resizes): only the region is computed, which equals resizing the whole image and cropping.
pub fn resize_region(
    img: &RgbImage,
    resized: (u32, u32),
    region: (u32, u32, u32, u32),
    resizer: &mut Resizer,
) -> Result<Vec<u8>> {
    let (rw, rh) = resized;
    let (x, y, w, h) = region;
    let sx = f64::from(img.width()) / f64::from(rw);
    let sy = f64::from(img.height()) / f64::from(rh);
    let mut dst = Image::new(w, h, fast_image_resize::PixelType::U8x3);
    let (left, top) = (f64::from(x) * sx, f64::from(y) * sy);
    // Clamped: (x + w) * sx can exceed the width by a rounding error, and so can left + (W - left).
    let fit = |start: f64, len: f64, limit: f64| {
        let mut len = len.min(limit - start);
        while start + len > limit {
            len = len.next_down();
        }
        len
    };
    let width = fit(left, f64::from(w) * sx, f64::from(img.width()));
    let height = fit(top, f64::from(h) * sy, f64::from(img.height()));
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(left, top, width, height);
    resizer.resize(img, &mut dst, &opts).map_err(|e| {
        anyhow::anyhow!(
            "resizing a {}x{} region ({left}, {top}, {width}, {height}): {e}",
            img.width(),
            img.height()
        )
    })?;
    Ok(dst.into_vec())
}

/// u8 HWC pixels -> f32 HWC in [0, 1], mirrored if `flip`, plus `shift`, minus mean, over std.
pub fn write_normalized(
    pixels: &[u8],
    w: u32,
    h: u32,
    flip: bool,
    shift: [f32; 3],
    n: &Normalize,
    out: &mut [f32],
) {
    let (w, h) = (w as usize, h as usize);
    debug_assert_eq!(out.len(), w * h * 3);
    let add: [f32; 3] = std::array::from_fn(|c| shift[c] - n.mean[c]);
    let mul: [f32; 3] = std::array::from_fn(|c| 1.0 / n.std[c]);
    for y in 0..h {
        for x in 0..w {
            let sx = if flip { w - 1 - x } else { x };
            let src = &pixels[(y * w + sx) * 3..(y * w + sx) * 3 + 3];
            let dst = &mut out[(y * w + x) * 3..(y * w + x) * 3 + 3];
            for c in 0..3 {
                dst[c] = (f32::from(src[c]) / 255.0 + add[c]) * mul[c];
            }
        }
    }
}

/// The crops of the 10-crop protocol in a `w` x `h` image: (x, y) of the 4 corners then the centre
/// (torchvision's FiveCrop order: top-left, top-right, bottom-left, bottom-right, centre).
pub fn five_crop_origins(w: u32, h: u32, crop: u32) -> [(u32, u32); 5] {
    // torchvision's center_crop: int(round(free / 2)), Python's round-half-to-even.
    let cx = (f64::from(w - crop) / 2.0).round_ties_even() as u32;
    let cy = (f64::from(h - crop) / 2.0).round_ties_even() as u32;
    [(0, 0), (w - crop, 0), (0, h - crop), (w - crop, h - crop), (cx, cy)]
}
