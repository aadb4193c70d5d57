//! Detection data from image files (PASCAL VOC, COCO): each image decoded, resized as the paper's
//! Faster R-CNN does (its shorter side to 600 pixels unless the longer would pass 1000, one scale
//! for both sides), normalised, flipped when asked, and padded at the bottom and right to a
//! common size divisible by 32 (torchvision's); its boxes scaled and flipped with it.

use super::dataset::{Batch, DetectionSet, flip_boxes};
use super::head::Target;
use crate::data::folder::decode_rgb;
use crate::data::transform::{Normalize, resize_region, write_normalized};
use anyhow::{Context, Result, ensure};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// The paper's input scale (Ren et al.; the ResNet paper's Appendix A: "the shorter side is 600").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resize {
    pub shorter: f64,
    pub longer_max: f64,
}

impl Resize {
    pub const PAPER: Resize = Resize { shorter: 600.0, longer_max: 1000.0 };

    /// The scale and the resized (width, height) of a `w` x `h` image: torchvision's
    /// `GeneralizedRCNNTransform` (`min(shorter / short side, longer_max / long side)`, sizes
    /// rounded down).
    pub fn apply(&self, w: u32, h: u32) -> (f64, (u32, u32)) {
        let (short, long) = (f64::from(w.min(h)), f64::from(w.max(h)));
        let scale = (self.shorter / short).min(self.longer_max / long);
        let size = |d: u32| ((f64::from(d) * scale).floor() as u32).max(1);
        (scale, (size(w), size(h)))
    }
}

/// One image file and its ground truth (boxes in the file's pixels, labels 1..).
#[derive(Debug)]
pub struct ImageItem {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub boxes: Vec<[f64; 4]>,
    pub labels: Vec<i64>,
}

/// Image files as a detection set.
#[derive(Debug)]
pub struct ImageSetFiles {
    pub items: Vec<ImageItem>,
    pub resize: Resize,
    pub normalize: Normalize,
    /// The padded batch's sides are multiples of this.
    pub divisor: u32,
}

impl ImageSetFiles {
    /// One image resized, normalised and flipped (`[3, h, w]` float32) and its target.
    fn load(&self, item: &ImageItem, flip: bool) -> Result<(Tensor, Target)> {
        let img = decode_rgb(&item.path)?;
        ensure!(
            (img.width(), img.height()) == (item.width, item.height),
            "{}: {}x{}, its annotation says {}x{}",
            item.path.display(),
            img.width(),
            img.height(),
            item.width,
            item.height
        );
        let (_, (w, h)) = self.resize.apply(item.width, item.height);
        let mut resizer = fast_image_resize::Resizer::new();
        let pixels = resize_region(&img, (w, h), (0, 0, w, h), &mut resizer)
            .with_context(|| format!("resizing {}", item.path.display()))?;
        let mut out = vec![0f32; (w * h * 3) as usize];
        write_normalized(&pixels, w, h, flip, [0.0; 3], &self.normalize, &mut out);
        let image =
            Tensor::from_slice(&out).view([i64::from(h), i64::from(w), 3]).permute([2, 0, 1]).contiguous();
        let (sx, sy) = (f64::from(w) / f64::from(item.width), f64::from(h) / f64::from(item.height));
        let flat: Vec<f32> = item
            .boxes
            .iter()
            .flat_map(|b| [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy])
            .map(|v| v as f32)
            .collect();
        let boxes = Tensor::from_slice(&flat).view([-1, 4]);
        let boxes = if flip { flip_boxes(&boxes, i64::from(w)) } else { boxes };
        Ok((image, Target { boxes, labels: Tensor::from_slice(&item.labels) }))
    }
}

impl DetectionSet for ImageSetFiles {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn batch(&self, indices: &[usize], flips: &[bool], device: Device) -> Result<Batch> {
        ensure!(
            indices.len() == flips.len() && !indices.is_empty(),
            "{} images, {} flips",
            indices.len(),
            flips.len()
        );
        let mut loaded = Vec::with_capacity(indices.len());
        for (&i, &flip) in indices.iter().zip(flips) {
            let item = self.items.get(i).with_context(|| format!("image {i} of {}", self.items.len()))?;
            loaded.push(self.load(item, flip)?);
        }
        let up =
            |v: i64| (v + i64::from(self.divisor) - 1) / i64::from(self.divisor) * i64::from(self.divisor);
        let ph = up(loaded.iter().map(|(t, _)| t.size()[1]).max().unwrap_or(1));
        let pw = up(loaded.iter().map(|(t, _)| t.size()[2]).max().unwrap_or(1));
        let images = Tensor::zeros([loaded.len() as i64, 3, ph, pw], (Kind::Float, Device::Cpu));
        let mut sizes = Vec::with_capacity(loaded.len());
        let mut targets = Vec::with_capacity(loaded.len());
        for (k, (img, t)) in loaded.into_iter().enumerate() {
            let (h, w) = (img.size()[1], img.size()[2]);
            let mut dst = images.get(k as i64).narrow(1, 0, h).narrow(2, 0, w);
            dst.copy_(&img);
            sizes.push((h, w));
            targets.push(Target { boxes: t.boxes.to_device(device), labels: t.labels.to_device(device) });
        }
        Ok(Batch { images: images.to_device(device), sizes, targets })
    }
}

impl ImageSetFiles {
    /// Image `i`'s resized size over its file's, (x, y): a box detected in the network's input
    /// divided by it is in the file's pixels.
    pub fn scale_of(&self, i: usize) -> (f64, f64) {
        let item = &self.items[i];
        let (_, (w, h)) = self.resize.apply(item.width, item.height);
        (f64::from(w) / f64::from(item.width), f64::from(h) / f64::from(item.height))
    }

    /// A VOC split: every object, the difficult ones included (as detectron2 trains; py-faster-rcnn
    /// leaves them out by default).
    pub fn from_voc(images: &[super::voc::VocImage], resize: Resize, normalize: Normalize) -> Self {
        let items = images
            .iter()
            .map(|i| ImageItem {
                path: i.image.clone(),
                width: i.width,
                height: i.height,
                boxes: i.objects.iter().map(|o| o.bbox).collect(),
                labels: i.objects.iter().map(|o| o.label).collect(),
            })
            .collect();
        ImageSetFiles { items, resize, normalize, divisor: 32 }
    }

    /// A COCO split's images under `dir`. For `training`: crowd objects left out (they are
    /// ignored in scoring, as torchvision's reference trains), boxes clipped to the image and
    /// those without area then left out, images with no object left out; how many of each in
    /// [`LeftOut`]. A test set keeps every image, in the file's order.
    pub fn from_coco(
        split: &super::coco::CocoSplit,
        dir: &std::path::Path,
        (resize, normalize): (Resize, Normalize),
        training: bool,
    ) -> (Self, LeftOut) {
        let mut left = LeftOut::default();
        let mut items = Vec::new();
        for i in &split.images {
            let (w, h) = (f64::from(i.width), f64::from(i.height));
            let clip = |b: [f64; 4]| {
                [
                    b[0].clamp(0.0, w),
                    b[1].clamp(0.0, h),
                    (b[0] + b[2]).clamp(0.0, w),
                    (b[1] + b[3]).clamp(0.0, h),
                ]
            };
            let mut boxes = Vec::new();
            let mut labels = Vec::new();
            for o in i.objects.iter().filter(|o| !o.crowd) {
                let b = clip(o.bbox);
                if b[2] > b[0] && b[3] > b[1] {
                    boxes.push(b);
                    labels.push(o.label);
                } else {
                    left.objects += 1;
                }
            }
            if boxes.is_empty() && training {
                left.images += 1;
                continue;
            }
            items.push(ImageItem {
                path: dir.join(&i.file_name),
                width: i.width,
                height: i.height,
                boxes,
                labels,
            });
        }
        (ImageSetFiles { items, resize, normalize, divisor: 32 }, left)
    }
}

/// What a COCO training set leaves out: objects without area (once clipped to the image) and
/// images without objects (crowd ones aside).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub objects: usize,
    pub images: usize,
}
