//! Detection scenes made of real objects, for showing the detector at small scale on a CPU: square
//! canvases (96x96 by default) of Fashion-MNIST items (or any 1-channel 28x28 image set) placed at
//! random positions and scales, their boxes exact. Each item is resized (bilinear, antialiased, as
//! PIL) to a random side, its box is the tight box of its non-zero pixels, and no two boxes
//! overlap (a placement that would overlap is drawn again, up to `tries` times, then left out), so
//! every box holds exactly one item's pixels. Training scenes take items from the training images,
//! test scenes from the test images: no item is seen in both.
//!
//! Scene `i` of seed `s` is a function of (s, i) alone (its own ChaCha8 stream): a set of `n`
//! scenes is the first `n` of a longer one, on any machine.

use super::dataset::{Batch, DetectionSet, flip_boxes};
use super::head::Target;
use crate::data::ImageSet;
use crate::data::augment::rng_for;
use anyhow::{Result, ensure};
use rand::Rng;
use tch::{Device, Kind, Tensor};

const STREAM: &[u8; 16] = b"detection-scenes";

/// How scenes are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneSettings {
    /// The canvas side, pixels.
    pub size: i64,
    /// Items a scene, uniform in this range (inclusive); fewer when placements run out.
    pub items: (usize, usize),
    /// An item's resized side, uniform in this range (inclusive), pixels.
    pub sides: (i64, i64),
    /// Draws of a position before an item is left out.
    pub tries: usize,
}

impl Default for SceneSettings {
    fn default() -> Self {
        SceneSettings { size: 96, items: (1, 6), sides: (16, 48), tries: 20 }
    }
}

impl SceneSettings {
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) = self.items;
        ensure!(lo >= 1 && lo <= hi, "items per scene {lo}..={hi}: at least 1, the first no larger");
        let (a, b) = self.sides;
        ensure!(a >= 4 && a <= b && b <= self.size, "item sides {a}..={b} on a {0}x{0} canvas", self.size);
        ensure!(self.tries >= 1, "at least one placement try");
        Ok(())
    }
}

/// Scenes: images `[N, 1, S, S]` (u8) and each one's ground truth (boxes in pixels, float32,
/// labels 1.. = the item's class + 1).
#[derive(Debug)]
pub struct Scenes {
    pub images: Tensor,
    pub targets: Vec<Target>,
    /// Per scene, which source images it holds (for tracing a scene to its items).
    pub sources: Vec<Vec<i64>>,
}

/// An item placed: its source image and its box (x1, y1, x2, y2).
struct Placed {
    source: i64,
    label: i64,
    x: i64,
    y: i64,
    patch: Tensor,
    tight: [i64; 4],
}

/// `count` scenes of seed `seed` drawn from `items` (u8 images `[M, 1, h, w]`, labels `[M]`).
pub fn generate(items: &ImageSet, count: usize, seed: u64, s: &SceneSettings) -> Result<Scenes> {
    s.validate()?;
    let shape = items.images.size();
    ensure!(shape.len() == 4 && shape[1] == 1, "item images of shape {shape:?}: [M, 1, h, w] expected");
    ensure!(!items.is_empty(), "no item images to make scenes of");
    let mut images = Vec::with_capacity(count);
    let (mut targets, mut sources) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let placed = draw_scene(items, seed, i as u64, s);
        let canvas = Tensor::zeros([1, s.size, s.size], (Kind::Uint8, tch::Device::Cpu));
        let mut boxes = Vec::new();
        for p in &placed {
            let side = p.patch.size()[1];
            // The patch is zero outside its tight box and tight boxes are disjoint: the maximum
            // keeps every other item's pixels where this patch's square reaches over them.
            let mut region = canvas.narrow(1, p.y, side).narrow(2, p.x, side);
            let kept = region.maximum(&p.patch);
            region.copy_(&kept);
            boxes.extend(p.tight.iter().map(|&v| v as f32));
        }
        images.push(canvas);
        let labels: Vec<i64> = placed.iter().map(|p| p.label).collect();
        targets.push(Target {
            boxes: Tensor::from_slice(&boxes).view([-1, 4]),
            labels: Tensor::from_slice(&labels),
        });
        sources.push(placed.iter().map(|p| p.source).collect());
    }
    Ok(Scenes { images: Tensor::stack(&images, 0), targets, sources })
}

/// One scene's items, drawn from its own stream.
fn draw_scene(items: &ImageSet, seed: u64, index: u64, s: &SceneSettings) -> Vec<Placed> {
    let mut rng = rng_for(seed, STREAM, index);
    let n = rng.random_range(s.items.0..=s.items.1);
    let mut placed: Vec<Placed> = Vec::with_capacity(n);
    for _ in 0..n {
        let source = rng.random_range(0..items.len()) as i64;
        let side = rng.random_range(s.sides.0..=s.sides.1);
        let patch = resize(&items.images.get(source), side);
        let Some(local) = tight_box(&patch) else { continue };
        for _ in 0..s.tries {
            let x = rng.random_range(0..=s.size - side);
            let y = rng.random_range(0..=s.size - side);
            let tight = [local[0] + x, local[1] + y, local[2] + x, local[3] + y];
            if placed.iter().all(|p| !overlap(&p.tight, &tight)) {
                let label = items.labels.int64_value(&[source]) + 1;
                placed.push(Placed { source, label, x, y, patch, tight });
                break;
            }
        }
    }
    placed
}

/// A `[1, h, w]` u8 image resized to `side` x `side` (bilinear, antialiased), u8.
fn resize(image: &Tensor, side: i64) -> Tensor {
    let x = image.to_kind(Kind::Float).unsqueeze(0);
    let y = x.internal_upsample_bilinear2d_aa([side, side], false, None, None);
    y.squeeze_dim(0).round().clamp(0.0, 255.0).to_kind(Kind::Uint8)
}

/// The tight box (x1, y1, x2, y2, pixel edges) of a `[1, h, w]` patch's non-zero pixels, if any.
fn tight_box(patch: &Tensor) -> Option<[i64; 4]> {
    let nz = patch.squeeze_dim(0).nonzero();
    if nz.size()[0] == 0 {
        return None;
    }
    let (ys, xs) = (nz.select(1, 0), nz.select(1, 1));
    let v = |t: Tensor| t.int64_value(&[]);
    Some([v(xs.min()), v(ys.min()), v(xs.max()) + 1, v(ys.max()) + 1])
}

/// Whether two boxes share any area.
fn overlap(a: &[i64; 4], b: &[i64; 4]) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

/// Scenes as the detector reads them: pixels scaled to [0, 1] minus `mean` (a classification
/// run's training mean, averaged over its pixels: scenes are larger than its images).
#[derive(Debug)]
pub struct SceneSet {
    pub scenes: Scenes,
    pub mean: f64,
}

impl DetectionSet for SceneSet {
    fn len(&self) -> usize {
        self.scenes.targets.len()
    }

    fn batch(&self, indices: &[usize], flips: &[bool], device: Device) -> Result<Batch> {
        ensure!(indices.len() == flips.len(), "{} images, {} flips", indices.len(), flips.len());
        let size = self.scenes.images.size()[3];
        let (mut images, mut targets) = (Vec::new(), Vec::new());
        for (&i, &flip) in indices.iter().zip(flips) {
            ensure!(i < self.len(), "scene {i} of {}", self.len());
            let image = self.scenes.images.get(i as i64).to_kind(Kind::Float) / 255.0 - self.mean;
            let t = &self.scenes.targets[i];
            let boxes = if flip { flip_boxes(&t.boxes, size) } else { t.boxes.shallow_clone() };
            images.push(if flip { image.flip([2]) } else { image });
            targets.push(Target { boxes: boxes.to_device(device), labels: t.labels.to_device(device) });
        }
        let images = Tensor::stack(&images, 0).to_device(device);
        Ok(Batch { images, sizes: vec![(size, size); indices.len()], targets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_strict() {
        assert!(overlap(&[0, 0, 10, 10], &[9, 9, 12, 12]));
        assert!(!overlap(&[0, 0, 10, 10], &[10, 0, 12, 12]));
        assert!(!overlap(&[0, 0, 10, 10], &[0, 10, 12, 12]));
    }

    #[test]
    fn tight_box_is_exact() {
        let p = Tensor::zeros([1, 8, 8], (Kind::Uint8, tch::Device::Cpu));
        assert_eq!(tight_box(&p), None);
        let _ = p.get(0).get(2).get(3).fill_(7);
        let _ = p.get(0).get(5).get(6).fill_(1);
        assert_eq!(tight_box(&p), Some([3, 2, 7, 6]));
    }
}
