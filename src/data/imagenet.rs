//! ImageNet (ILSVRC-2012) in the usual folder layout, `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG`:
//! the class index, decoding as torchvision does (any mode to RGB, the format sniffed from the
//! bytes), and the paper's transforms on one image: scale augmentation, crops, flips, AlexNet PCA
//! colour augmentation, mean subtraction; centre crop, 10-crop and full images for testing.

use anyhow::{Context, Result, bail, ensure};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use image::RgbImage;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File endings torchvision's ImageFolder accepts (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// Keep a part of the dataset, to try the pipeline on a small subset first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    /// The first this many classes (in sorted order); all when absent.
    pub classes: Option<usize>,
    /// The first this many images (in sorted order) of each class; all when absent.
    pub images_per_class: Option<usize>,
}

/// One split of an image folder: classes from the sorted sub-folder names, images sorted within each.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Class names (wnids), sorted; a class's index is its position.
    pub classes: Vec<String>,
    pub samples: Vec<(PathBuf, u32)>,
}

impl ImageFolder {
    pub fn scan(root: &Path, subset: Subset) -> Result<Self> {
        ensure!(
            root.is_dir(),
            "{}: not a folder (expected <data-dir>/train/<wnid>/*.JPEG and val/<wnid>/*.JPEG)",
            root.display()
        );
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .with_context(|| format!("listing {}", root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if let Some(k) = subset.classes {
            classes.truncate(k);
        }
        ensure!(!classes.is_empty(), "{}: no class folders", root.display());
        let mut samples = Vec::new();
        for (index, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("listing {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            files.sort();
            if let Some(k) = subset.images_per_class {
                files.truncate(k);
            }
            ensure!(
                !files.is_empty(),
                "{}: no images (endings {})",
                dir.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
            samples.extend(files.into_iter().map(|f| (f, index as u32)));
        }
        Ok(ImageFolder { root: root.to_path_buf(), classes, samples })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// A validation folder must have the training folder's classes, in the same order.
    pub fn check_same_classes(&self, train: &ImageFolder) -> Result<()> {
        if self.classes != train.classes {
            let missing: Vec<&String> =
                train.classes.iter().filter(|c| !self.classes.contains(c)).take(5).collect();
            let extra: Vec<&String> =
                self.classes.iter().filter(|c| !train.classes.contains(c)).take(5).collect();
            bail!(
                "{} has {} classes and {} has {}; they must be the same (missing from validation: {missing:?}; \
                 not in training: {extra:?})",
                self.root.display(),
                self.classes.len(),
                train.root.display(),
                train.classes.len()
            );
        }
        Ok(())
    }

    /// Writes `index,class` lines (the class index a run used) to `path`.
    pub fn write_class_index(&self, path: &Path) -> Result<()> {
        let mut text = String::from("index,class\n");
        for (i, c) in self.classes.iter().enumerate() {
            text.push_str(&format!("{i},{c}\n"));
        }
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}

/// Decodes an image file to 8-bit RGB as torchvision's loader (PIL `convert("RGB")`) does: the
/// format is read from the bytes, not the name (a PNG named .JPEG decodes), grey images are
/// replicated, alpha dropped, CMYK converted.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    Ok(decode(path)?.to_rgb8())
}

/// Decodes an image file as it is (its own colour type), the format read from the bytes.
pub fn decode(path: &Path) -> Result<image::DynamicImage> {
    let reader = image::ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?;
    let img = reader.decode().with_context(|| format!("{}: not a decodable image", path.display()))?;
    ensure!(img.width() > 0 && img.height() > 0, "{}: empty image", path.display());
    Ok(img)
}

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
fn write_normalized(
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

/// The test protocols of Sec. 3.4 / Tables 2-4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Shorter side 256, the centre 224x224 crop (Figure 4's validation curves).
    Center,
    /// Shorter side 256, the 4 corner and the centre crops, and those of the mirrored image (as
    /// torchvision's TenCrop); softmax averaged (Tables 2 and 3).
    TenCrop,
    /// Fully convolutional: the whole image at shorter sides 224, 256, 384, 480 and 640, and
    /// mirrored; softmax averaged over the 10 (Table 4).
    MultiScale,
}

impl std::str::FromStr for Protocol {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "center" | "centre" => Ok(Protocol::Center),
            "ten-crop" | "10-crop" => Ok(Protocol::TenCrop),
            "multi-scale" => Ok(Protocol::MultiScale),
            _ => bail!("unknown protocol {s:?}: expected center, ten-crop or multi-scale"),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Center => "center",
            Protocol::TenCrop => "ten-crop",
            Protocol::MultiScale => "multi-scale",
        })
    }
}

pub const MULTI_SCALE_SIDES: [u32; 5] = [224, 256, 384, 480, 640];

/// Sizes of the test protocols: the paper's (resize 256, crop 224, scales 224..640) by default; the
/// quick preset scales them down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalGeometry {
    /// Shorter side before the centre and 10 crops.
    pub resize: u32,
    pub crop: u32,
    /// Shorter sides of the multi-scale protocol.
    pub scales: Vec<u32>,
}

impl Default for EvalGeometry {
    fn default() -> Self {
        EvalGeometry { resize: 256, crop: 224, scales: MULTI_SCALE_SIDES.to_vec() }
    }
}

impl EvalGeometry {
    /// Views per image whose softmax `protocol` averages: 1, 10, or 2 per scale.
    pub fn views(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Center => 1,
            Protocol::TenCrop => 10,
            Protocol::MultiScale => 2 * self.scales.len(),
        }
    }
}

/// One test view: its pixels (f32 HWC) and size.
#[derive(Debug, Clone)]
pub struct View {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
}

/// The crops of the 10-crop protocol in a `w` x `h` image: (x, y) of the 4 corners then the centre
/// (torchvision's FiveCrop order: top-left, top-right, bottom-left, bottom-right, centre).
pub fn five_crop_origins(w: u32, h: u32, crop: u32) -> [(u32, u32); 5] {
    // torchvision's center_crop: int(round(free / 2)), Python's round-half-to-even.
    let cx = (f64::from(w - crop) / 2.0).round_ties_even() as u32;
    let cy = (f64::from(h - crop) / 2.0).round_ties_even() as u32;
    [(0, 0), (w - crop, 0), (0, h - crop), (w - crop, h - crop), (cx, cy)]
}

/// The views a protocol tests on, for one image; all views of a protocol but multi-scale have the
/// same size, so they batch.
pub fn test_views(
    img: &RgbImage,
    protocol: Protocol,
    g: &EvalGeometry,
    n: &Normalize,
    resizer: &mut Resizer,
) -> Result<Vec<View>> {
    let crop = g.crop;
    let mut views = Vec::new();
    let mut push = |pixels: &[u8], w: u32, h: u32, flip: bool| {
        let mut data = vec![0f32; (w * h * 3) as usize];
        write_normalized(pixels, w, h, flip, [0.0; 3], n, &mut data);
        views.push(View { width: w, height: h, data });
    };
    match protocol {
        Protocol::Center | Protocol::TenCrop => {
            let (rw, rh) = resized_size(img.width(), img.height(), g.resize);
            let origins = five_crop_origins(rw, rh, crop);
            let chosen: &[(u32, u32)] = if protocol == Protocol::Center { &origins[4..] } else { &origins };
            for &(x, y) in chosen {
                let px = resize_region(img, (rw, rh), (x, y, crop, crop), resizer)?;
                push(&px, crop, crop, false);
            }
            if protocol == Protocol::TenCrop {
                // torchvision's TenCrop: the five crops of the mirrored image. Its crop at x is the
                // mirror of the original's crop at rw - crop - x (the centre differs from the
                // original's by a pixel when the free room is odd).
                for &(x, y) in &origins {
                    let px = resize_region(img, (rw, rh), (rw - crop - x, y, crop, crop), resizer)?;
                    push(&px, crop, crop, true);
                }
            }
        }
        Protocol::MultiScale => {
            for &side in &g.scales {
                let (rw, rh) = resized_size(img.width(), img.height(), side);
                let px = resize_region(img, (rw, rh), (0, 0, rw, rh), resizer)?;
                push(&px, rw, rh, false);
                push(&px, rw, rh, true);
            }
        }
    }
    Ok(views)
}

/// `[data]` of an image-folder experiment (ImageNet): the subset, the training transform, the
/// validation images of the curves, and the final test protocols.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderOptions {
    /// Classes and training images per class to keep (all by default).
    #[serde(default)]
    pub subset: Subset,
    /// Validation images per class to keep (all by default).
    #[serde(default)]
    pub val_images_per_class: Option<usize>,
    #[serde(default)]
    pub transform: TrainTransform,
    #[serde(default)]
    pub geometry: EvalGeometry,
    /// Validation images (spread over the classes) for the centre-crop error logged during training,
    /// Figure 4's bold curves; the whole validation folder when absent.
    #[serde(default)]
    pub val_images: Option<usize>,
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Protocols of the final evaluation on the whole validation folder.
    pub final_protocols: Vec<Protocol>,
    /// Re-estimate the BN statistics over this many training images before the final evaluation.
    #[serde(default)]
    pub bn_reestimate_images: Option<usize>,
}

fn default_eval_batch() -> usize {
    64
}

impl FolderOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.final_protocols.is_empty(), "data.final_protocols is empty");
        ensure!(self.eval_batch_size > 0, "data.eval_batch_size must be positive");
        let t = &self.transform;
        ensure!(
            t.min_side <= t.max_side && t.crop <= t.min_side,
            "data.transform: need crop <= min_side <= max_side"
        );
        Ok(())
    }

    /// The subset of the validation folder to scan.
    pub fn val_subset(&self) -> Subset {
        Subset { classes: self.subset.classes, images_per_class: self.val_images_per_class }
    }
}

/// The ImageNet root: `<dir>` with `train/` and `val/`, or `<dir>/imagenet` with them.
pub fn locate_root(dir: &Path) -> Result<PathBuf> {
    for root in [dir.to_path_buf(), dir.join("imagenet")] {
        if root.join("train").is_dir() && root.join("val").is_dir() {
            return Ok(root);
        }
    }
    anyhow::bail!(
        "no ImageNet folder at {}: expected {0}/train/<wnid>/*.JPEG and {0}/val/<wnid>/*.JPEG (val sorted into \
         class folders, as torchvision's ImageFolder wants); pass --data-dir (make: DATA_DIR=) to your \
         ILSVRC-2012 copy, or make a small sample with `cargo run --release --bin export_imagefolder`",
        dir.display()
    )
}
