//! The CIFAR augmentation of Sec. 4.2, batched: zero-pad 4 pixels on each side, take a random crop of
//! the original size (every one of the 9x9 offsets), flip horizontally with probability 1/2. One
//! gather per batch on the training device, no loop over images.
//!
//! All randomness is a function of (seed, epoch): the epoch's shuffle, offsets and flips are drawn
//! at once from a ChaCha8 stream keyed by both, so batch `k` of epoch `e` is the same in a resumed
//! run, on any device.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// A random stream for (seed, stream, index): the same three give the same numbers.
pub fn rng_for(seed: u64, stream: &[u8; 16], index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..].copy_from_slice(stream);
    ChaCha8Rng::from_seed(key)
}

const EPOCH_STREAM: &[u8; 16] = b"cifar-epoch-plan";

/// One epoch of training batches: which images, and how each is cropped and flipped.
#[derive(Debug)]
pub struct EpochPlan {
    pub epoch: u64,
    /// Image indices, `batches * batch_size` of them (the last partial batch is dropped).
    pub order: Tensor,
    /// Crop offsets in the padded image, 0..=2*pad.
    pub offset_y: Tensor,
    pub offset_x: Tensor,
    pub flip: Tensor,
    pub batch_size: usize,
}

impl EpochPlan {
    /// The plan of `epoch` for `n` images; with `augment` false every offset is `pad` (the centre,
    /// i.e. the original image) and nothing is flipped. Drawn on the CPU, stored on `device`.
    pub fn new(
        seed: u64,
        epoch: u64,
        n: usize,
        batch_size: usize,
        pad: i64,
        augment: bool,
        device: Device,
    ) -> Self {
        let mut rng = rng_for(seed, EPOCH_STREAM, epoch);
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        order.truncate((n / batch_size) * batch_size);
        let m = order.len();
        let (oy, ox, flip): (Vec<i64>, Vec<i64>, Vec<bool>) = if augment {
            let oy = (0..m).map(|_| rng.random_range(0..=2 * pad)).collect();
            let ox = (0..m).map(|_| rng.random_range(0..=2 * pad)).collect();
            let flip = (0..m).map(|_| rng.next_u32() & 1 == 1).collect();
            (oy, ox, flip)
        } else {
            (vec![pad; m], vec![pad; m], vec![false; m])
        };
        EpochPlan {
            epoch,
            order: Tensor::from_slice(&order).to_device(device),
            offset_y: Tensor::from_slice(&oy).to_device(device),
            offset_x: Tensor::from_slice(&ox).to_device(device),
            flip: Tensor::from_slice(&flip).to_device(device),
            batch_size,
        }
    }

    pub fn batches(&self) -> usize {
        self.order.size()[0] as usize / self.batch_size
    }

    /// Batch `k` of the epoch from `images` (N x C x H x W) and `labels`: augmented images and labels.
    pub fn batch(&self, k: usize, images: &Tensor, labels: &Tensor, pad: i64) -> (Tensor, Tensor) {
        self.part(k, (0, 1), images, labels, pad)
    }

    /// Part `i` of `n` equal parts of batch `k` (a replica's slice of the global batch): the same
    /// images, crops and flips as those positions of [`EpochPlan::batch`].
    pub fn part(
        &self,
        k: usize,
        (i, n): (usize, usize),
        images: &Tensor,
        labels: &Tensor,
        pad: i64,
    ) -> (Tensor, Tensor) {
        let len = self.batch_size / n;
        let start = (k * self.batch_size + i * len) as i64;
        let len = len as i64;
        let idx = self.order.narrow(0, start, len);
        let x = images.index_select(0, &idx);
        let y = labels.index_select(0, &idx);
        let oy = self.offset_y.narrow(0, start, len);
        let ox = self.offset_x.narrow(0, start, len);
        let flip = self.flip.narrow(0, start, len);
        (pad_crop_flip(&x, pad, &oy, &ox, &flip), y)
    }
}

/// Zero-pads a batch by `pad` on each side, then takes from each image `i` the crop whose top-left
/// corner is (`offset_y[i]`, `offset_x[i]`) in the padded image, mirrored left-right where `flip[i]`.
/// The output has the input's size. One gather for the whole batch.
pub fn pad_crop_flip(x: &Tensor, pad: i64, offset_y: &Tensor, offset_x: &Tensor, flip: &Tensor) -> Tensor {
    let (b, c, h, w) = x.size4().expect("a batch of images, B x C x H x W");
    let dev = x.device();
    let padded = if pad > 0 { x.constant_pad_nd([pad, pad, pad, pad]) } else { x.shallow_clone() };
    let ar_h = Tensor::arange(h, (Kind::Int64, dev));
    let ar_w = Tensor::arange(w, (Kind::Int64, dev));
    let rows = offset_y.view([b, 1]) + ar_h.view([1, h]);
    let cols_fwd = offset_x.view([b, 1]) + ar_w.view([1, w]);
    let cols_rev = offset_x.view([b, 1]) + (ar_w.flip([0])).view([1, w]);
    let cols = cols_rev.where_self(&flip.view([b, 1]), &cols_fwd);
    let bi = Tensor::arange(b, (Kind::Int64, dev)).view([b, 1, 1, 1]);
    let ci = Tensor::arange(c, (Kind::Int64, dev)).view([1, c, 1, 1]);
    padded.index(&[Some(bi), Some(ci), Some(rows.view([b, 1, h, 1])), Some(cols.view([b, 1, 1, w]))])
}

/// Where update `iteration` falls for `n` images in batches of `batch_size`: (epoch, batch of the
/// epoch). The last partial batch of an epoch is dropped.
pub fn locate(iteration: u64, n: usize, batch_size: usize) -> (u64, usize) {
    let per_epoch = (n / batch_size) as u64;
    (iteration / per_epoch, (iteration % per_epoch) as usize)
}

/// An [`EpochPlan`] kept in fixed device buffers, with the start of the current batch in a device
/// scalar: each batch is then drawn by device operations on unchanging tensors, which a CUDA graph
/// can capture once and replay for every batch. [`StagedPlan::stage`] writes the buffers (a new
/// epoch's plan, a batch's start); [`StagedPlan::part`] is the captured part, and gives the same
/// images, crops and flips as [`EpochPlan::part`].
#[derive(Debug)]
pub struct StagedPlan {
    seed: u64,
    n: usize,
    pad: i64,
    augment: bool,
    /// This replica's part of every batch: (i, parts).
    part: (usize, usize),
    /// The buffers, holding the plan of `plan.epoch`.
    plan: EpochPlan,
    /// Where this part of the current batch starts in the epoch's plan (int64 scalar).
    start: Tensor,
    /// 0..part length, added to `start`.
    offsets: Tensor,
}

impl StagedPlan {
    pub fn new(
        seed: u64,
        n: usize,
        batch_size: usize,
        pad: i64,
        augment: bool,
        part: (usize, usize),
        device: Device,
    ) -> Self {
        let plan = EpochPlan::new(seed, 0, n, batch_size, pad, augment, device);
        let len = (batch_size / part.1) as i64;
        StagedPlan {
            seed,
            n,
            pad,
            augment,
            part,
            plan,
            start: Tensor::zeros([], (Kind::Int64, device)),
            offsets: Tensor::arange(len, (Kind::Int64, device)),
        }
    }

    /// Points the buffers at update `iteration`'s batch: copies in its epoch's plan when the epoch
    /// changes, and sets the start. Writes into the existing tensors only.
    pub fn stage(&mut self, iteration: u64) {
        let batch_size = self.plan.batch_size;
        let (epoch, k) = locate(iteration, self.n, batch_size);
        if self.plan.epoch != epoch {
            let dev = self.start.device();
            let new = EpochPlan::new(self.seed, epoch, self.n, batch_size, self.pad, self.augment, dev);
            for (to, from) in [
                (&self.plan.order, &new.order),
                (&self.plan.offset_y, &new.offset_y),
                (&self.plan.offset_x, &new.offset_x),
                (&self.plan.flip, &new.flip),
            ] {
                to.shallow_clone().copy_(from);
            }
            self.plan.epoch = epoch;
        }
        let start = k * batch_size + self.part.0 * self.images();
        let _ = self.start.shallow_clone().fill_(start as i64);
    }

    /// Images in this part of a batch.
    pub fn images(&self) -> usize {
        self.plan.batch_size / self.part.1
    }

    /// The staged batch's part of `images` (N x C x H x W) and `labels`, augmented: device
    /// operations on the buffers only.
    pub fn part(&self, images: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
        let at = &self.offsets + &self.start;
        let idx = self.plan.order.index_select(0, &at);
        let x = images.index_select(0, &idx);
        let y = labels.index_select(0, &idx);
        let oy = self.plan.offset_y.index_select(0, &at);
        let ox = self.plan.offset_x.index_select(0, &at);
        let flip = self.plan.flip.index_select(0, &at);
        (pad_crop_flip(&x, self.pad, &oy, &ox, &flip), y)
    }
}
