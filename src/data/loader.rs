//! Streaming ImageNet batches: a producer thread decodes and augments each batch on a pool of
//! threads and hands finished batches over a bounded queue, so memory stays at a few batches and the
//! training step never waits on one image. Batch `k` is a function of (seed, k): the epoch's order
//! comes from (seed, epoch), each image's augmentation from (seed, epoch, position), so a resumed run
//! sees the same data.

use super::augment::rng_for;
use crate::data::folder::{ImageFolder, decode_rgb};
use crate::data::transform::TrainTransform;
use anyhow::{Context, Result, anyhow};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tch::{Device, Kind, Tensor};

const ORDER_STREAM: &[u8; 16] = b"imagenet-order..";
const AUGMENT_STREAM: &[u8; 16] = b"imagenet-augment";

/// How the loader runs.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Decoding threads.
    pub threads: usize,
    /// Finished batches kept ready.
    pub prefetch: usize,
    pub seed: u64,
    /// Skip undecodable images instead of stopping with an error naming the file. A skipped image
    /// is counted once and its place in the batch taken by the next image of the epoch's order, so
    /// that image appears twice in that epoch: batches stay full and every other image keeps its
    /// place, whatever was skipped.
    pub skip_corrupt: bool,
    /// (rank, world): a data-parallel replica decodes only part `rank` of `world` equal parts of
    /// every batch of `batch_size` (the global batch), the same images and augmentations as those
    /// positions of the whole batch. (0, 1) alone.
    pub part: (usize, usize),
}

/// Loader settings that do not change results: threads, read-ahead, and whether undecodable
/// images are skipped.
#[derive(Debug, Clone)]
pub struct LoaderSettings {
    pub threads: usize,
    pub prefetch: usize,
    pub skip_corrupt: bool,
}

impl LoaderSettings {
    pub fn options(&self, batch_size: usize, seed: u64) -> LoaderOptions {
        LoaderOptions {
            batch_size,
            threads: self.threads,
            prefetch: self.prefetch,
            seed,
            skip_corrupt: self.skip_corrupt,
            part: (0, 1),
        }
    }
}

/// The undecodable images met so far (indices into the folder), shared with the producer.
type BadSet = Arc<Mutex<BTreeSet<usize>>>;

/// One finished batch (or a replica's part of it): HWC float pixels of its images, and their labels.
pub struct HostBatch {
    pub iteration: u64,
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    pub side: u32,
}

impl HostBatch {
    /// As an N x 3 x H x W tensor in channels_last layout (the HWC data viewed as NCHW), on `device`;
    /// a copy to a GPU goes through pinned memory without blocking.
    pub fn to_tensors(&self, device: Device) -> (Tensor, Tensor) {
        let (b, s) = (self.labels.len() as i64, i64::from(self.side));
        let x = Tensor::from_slice(&self.pixels).view([b, s, s, 3]).permute([0, 3, 1, 2]);
        let y = Tensor::from_slice(&self.labels);
        if device.is_cuda() {
            let pin = |t: &Tensor| t.pin_memory(device);
            (
                pin(&x).to_device_(device, Kind::Float, true, false),
                pin(&y).to_device_(device, Kind::Int64, true, false),
            )
        } else {
            (x, y)
        }
    }
}

/// The order of epoch `epoch`: a permutation of the `n` images, `n / batch` batches (the last
/// partial batch dropped).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng_for(seed, ORDER_STREAM, epoch));
    order
}

/// Training batches from `start_iteration` on, produced ahead in a background thread.
pub struct TrainLoader {
    rx: Option<Receiver<Result<HostBatch>>>,
    handle: Option<JoinHandle<()>>,
    skipped: BadSet,
    pub batches_per_epoch: u64,
}

impl TrainLoader {
    pub fn start(
        folder: Arc<ImageFolder>,
        transform: TrainTransform,
        opts: LoaderOptions,
        start_iteration: u64,
        known_bad: &[usize],
    ) -> Result<Self> {
        let n = folder.len();
        let (rank, world) = opts.part;
        anyhow::ensure!(
            rank < world && opts.batch_size.is_multiple_of(world),
            "batch size {} cannot be split into {world} equal parts (part {rank})",
            opts.batch_size
        );
        anyhow::ensure!(
            opts.batch_size <= n,
            "batch size {} is larger than the training set ({n} images in {})",
            opts.batch_size,
            folder.root.display()
        );
        let batches_per_epoch = (n / opts.batch_size) as u64;
        let (tx, rx) = sync_channel(opts.prefetch.max(1));
        let skipped: BadSet = Arc::new(Mutex::new(known_bad.iter().copied().collect()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.max(1))
            .thread_name(|i| format!("loader-{i}"))
            .build()
            .context("starting the loader's threads")?;
        let counter = skipped.clone();
        let handle = std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || {
                produce(folder, transform, opts, start_iteration, batches_per_epoch, pool, counter, tx)
            })
            .context("starting the loader thread")?;
        Ok(TrainLoader { rx: Some(rx), handle: Some(handle), skipped, batches_per_epoch })
    }

    /// The next batch (waits for it if the loader is behind).
    pub fn next_batch(&mut self) -> Result<HostBatch> {
        let rx = self.rx.as_ref().expect("loader running");
        rx.recv().map_err(|_| anyhow!("the loader thread stopped"))?
    }

    /// The undecodable images skipped so far (with `skip_corrupt`), those known at the start
    /// included, sorted.
    pub fn skipped(&self) -> Vec<usize> {
        self.skipped.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }
}

impl Drop for TrainLoader {
    fn drop(&mut self) {
        // Closing the queue stops the producer at its next send.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn produce(
    folder: Arc<ImageFolder>,
    transform: TrainTransform,
    opts: LoaderOptions,
    start: u64,
    batches_per_epoch: u64,
    pool: rayon::ThreadPool,
    bad: BadSet,
    tx: SyncSender<Result<HostBatch>>,
) {
    let n = folder.len();
    let side = transform.crop;
    let per_image = (side * side * 3) as usize;
    let mut order: Option<(u64, Vec<u32>)> = None;
    for it in start.. {
        let epoch = it / batches_per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(opts.seed, epoch, n)));
        }
        let ord = &order.as_ref().unwrap().1;
        let (rank, world) = opts.part;
        let len = opts.batch_size / world;
        let first = (it % batches_per_epoch) as usize * opts.batch_size + rank * len;
        let mut pixels = vec![0f32; len * per_image];
        let mut labels = vec![0i64; len];
        let result: Result<()> = pool.install(|| {
            pixels.par_chunks_mut(per_image).zip(labels.par_iter_mut()).enumerate().try_for_each_init(
                fast_image_resize::Resizer::new,
                |resizer, (k, (out, label))| {
                    let position = first + k;
                    // With skip_corrupt, an undecodable image is replaced by the next one in the order.
                    for attempt in 0..n {
                        let index = ord[(position + attempt) % n] as usize;
                        let (path, class) = &folder.samples[index];
                        if opts.skip_corrupt && bad.lock().unwrap_or_else(|p| p.into_inner()).contains(&index)
                        {
                            continue; // known bad (here or before a resume): skipped as it was then
                        }
                        match decode_rgb(path) {
                            Ok(img) => {
                                let mut rng =
                                    rng_for(opts.seed, AUGMENT_STREAM, epoch * n as u64 + position as u64);
                                let draw = transform.draw(&mut rng);
                                transform
                                    .apply(&img, &draw, resizer, out)
                                    .with_context(|| path.display().to_string())?;
                                *label = i64::from(*class);
                                return Ok(());
                            }
                            Err(e) if opts.skip_corrupt => {
                                // Counted and reported once per file, however many epochs meet it.
                                if bad.lock().unwrap_or_else(|p| p.into_inner()).insert(index) {
                                    eprintln!("skipping {e:#}");
                                }
                            }
                            Err(e) => {
                                return Err(e.context(
                                    "pass --skip-corrupt to skip undecodable images (they are counted)",
                                ));
                            }
                        }
                    }
                    Err(anyhow!("no decodable image in {}", folder.root.display()))
                },
            )
        });
        let msg = result.map(|()| HostBatch { iteration: it, pixels, labels, side });
        let failed = msg.is_err();
        if tx.send(msg).is_err() || failed {
            return;
        }
    }
}
