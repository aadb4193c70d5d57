//! The test protocols: the error over tensors (CIFAR), the centre-crop, 10-crop and multi-scale
//! protocols over an image folder with top-1/top-5 error (ImageNet), and the re-estimation of BN
//! statistics over training batches that the paper's authors used for testing.

use crate::data::folder::{ImageFolder, decode_rgb};
use crate::data::loader::{LoaderOptions, TrainLoader};
use crate::data::transform::{Normalize, TrainTransform};
use crate::data::{EvalGeometry, FolderOptions, Protocol};
use crate::dist::Replicas;
use crate::eval::views::{View, test_views};
use crate::models::ResNet;
use crate::shim::{MemoryFormat, contiguous};
use anyhow::{Context, Result, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::sync::Arc;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT};

/// Error (%) of `net` in eval mode over `(x, y)`, in batches of `batch`.
pub fn error_rate(net: &ResNet, x: &Tensor, y: &Tensor, batch: usize, format: MemoryFormat) -> Result<f64> {
    let n = y.size()[0];
    Ok(100.0 * wrong_count(net, x, y, batch, format)? as f64 / n as f64)
}

/// How many of `x` (in eval mode, `batch` at a time) `net` misclassifies.
pub fn wrong_count(net: &ResNet, x: &Tensor, y: &Tensor, batch: usize, format: MemoryFormat) -> Result<i64> {
    let _guard = tch::no_grad_guard();
    let n = y.size()[0];
    let mut wrong = Tensor::zeros([], (Kind::Int64, y.device()));
    let mut start = 0;
    while start < n {
        let len = (batch as i64).min(n - start);
        let xb = contiguous(&x.narrow(0, start, len), format)?;
        let pred = net.forward_t(&xb, false).argmax(1, false);
        wrong += pred.ne_tensor(&y.narrow(0, start, len)).sum(Kind::Int64);
        start += len;
    }
    Ok(wrong.int64_value(&[]))
}

/// Misclassified counts for top-1 and top-5 of `probs` (N x classes) against `labels` (N).
/// With fewer than 5 classes, top-5 counts every image as right.
pub fn topk_wrong(probs: &Tensor, labels: &Tensor) -> (i64, i64) {
    let classes = probs.size()[1];
    let k = classes.min(5);
    let (_, top) = probs.topk(k, 1, true, true);
    let hit = top.eq_tensor(&labels.unsqueeze(1));
    let top1_wrong = hit.narrow(1, 0, 1).logical_not().sum(Kind::Int64).int64_value(&[]);
    let top5_wrong = hit.any_dim(1, false).logical_not().sum(Kind::Int64).int64_value(&[]);
    (top1_wrong, top5_wrong)
}

/// What an evaluation measured; written as `eval-<protocol>.json` beside a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub protocol: Protocol,
    pub top1_error: f64,
    pub top5_error: f64,
    pub images: usize,
    /// Views per image whose softmax is averaged (1, 10, or 2 per scale).
    pub views: usize,
    /// Training images the BN statistics were re-estimated over, if they were.
    pub bn_reestimated_over: Option<usize>,
    pub seconds: f64,
}

/// How an evaluation runs.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub protocol: Protocol,
    pub geometry: EvalGeometry,
    pub normalize: Normalize,
    /// Images per forward batch (centre and 10-crop).
    pub batch: usize,
    pub threads: usize,
    pub device: Device,
    pub format: MemoryFormat,
    pub progress: bool,
    /// The other replicas, if any: this one evaluates its share of the images and the error counts
    /// are summed over all of them (every replica must call, with the same images).
    pub replicas: Option<Arc<Replicas>>,
}

impl EvalOptions {
    /// A protocol over an experiment's image folder, with its geometry, normalisation and batch.
    pub fn for_folder(
        o: &FolderOptions,
        protocol: Protocol,
        threads: usize,
        device: Device,
        format: MemoryFormat,
    ) -> Self {
        EvalOptions {
            protocol,
            geometry: o.geometry.clone(),
            normalize: o.transform.normalize,
            batch: o.eval_batch_size,
            threads,
            device,
            format,
            progress: false,
            replicas: None,
        }
    }
}

fn views_to_tensor(views: &[View], device: Device) -> Tensor {
    let (w, h) = (i64::from(views[0].width), i64::from(views[0].height));
    let mut data = Vec::with_capacity(views.len() * views[0].data.len());
    for v in views {
        data.extend_from_slice(&v.data);
    }
    Tensor::from_slice(&data).view([views.len() as i64, h, w, 3]).permute([0, 3, 1, 2]).to_device(device)
}

/// Evaluates `net` (eval mode) on `indices` of `folder` (all when `None`) with a protocol: softmax
/// averaged over each image's views, then top-1 and top-5 error (%). With replicas, each evaluates
/// its share and the counts are summed.
pub fn evaluate_folder(
    net: &ResNet,
    folder: &ImageFolder,
    indices: Option<&[usize]>,
    o: &EvalOptions,
) -> Result<EvalResult> {
    let started = std::time::Instant::now();
    let all: Vec<usize>;
    let indices = match indices {
        Some(i) => i,
        None => {
            all = (0..folder.len()).collect();
            &all
        }
    };
    ensure!(!indices.is_empty(), "nothing to evaluate in {}", folder.root.display());
    let n = indices.len();
    let share = &indices[o.replicas.as_ref().map_or(0..n, |dp| dp.share(n))];
    let (mut wrong1, mut wrong5) = count_wrong(net, folder, share, o)?;
    if let Some(dp) = &o.replicas {
        let sums = dp.sum(&[wrong1 as f64, wrong5 as f64])?;
        (wrong1, wrong5) = (sums[0] as i64, sums[1] as i64);
    }
    Ok(EvalResult {
        protocol: o.protocol,
        top1_error: 100.0 * wrong1 as f64 / n as f64,
        top5_error: 100.0 * wrong5 as f64 / n as f64,
        images: n,
        views: o.geometry.views(o.protocol),
        bn_reestimated_over: None,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The (top-1, top-5) misclassified images of `indices` (this process's).
fn count_wrong(net: &ResNet, folder: &ImageFolder, indices: &[usize], o: &EvalOptions) -> Result<(i64, i64)> {
    let pool =
        rayon::ThreadPoolBuilder::new().num_threads(o.threads.max(1)).build().context("starting threads")?;
    let _guard = tch::no_grad_guard();
    let bar = progress_bar(o, indices.len());
    let (mut wrong1, mut wrong5) = (0i64, 0i64);
    // Per-image views are decoded on the pool, a chunk at a time; the forward passes batch them.
    let chunk = if o.protocol == Protocol::MultiScale { o.threads.max(1) * 2 } else { o.batch.max(1) };
    for part in indices.chunks(chunk) {
        let decoded = pool.install(|| decode_views(folder, part, o))?;
        let labels = Tensor::from_slice(&decoded.iter().map(|d| d.1).collect::<Vec<_>>()).to_device(o.device);
        let (w1, w5) = topk_wrong(&average_probs(net, &decoded, o)?, &labels);
        wrong1 += w1;
        wrong5 += w5;
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    Ok((wrong1, wrong5))
}

fn progress_bar(o: &EvalOptions, images: usize) -> ProgressBar {
    if !(o.progress && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(images as u64);
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:25}] {pos}/{len} images, {per_sec}, ETA {eta}").unwrap(),
    );
    b.set_message(format!("evaluating ({})", o.protocol));
    b
}

/// The protocol's views of each image of `part` and its label, decoded in parallel.
fn decode_views(folder: &ImageFolder, part: &[usize], o: &EvalOptions) -> Result<Vec<(Vec<View>, i64)>> {
    part.par_iter()
        .map_init(fast_image_resize::Resizer::new, |resizer, &i| {
            let (path, class) = &folder.samples[i];
            let img = decode_rgb(path)?;
            let views = test_views(&img, o.protocol, &o.geometry, &o.normalize, resizer)
                .with_context(|| path.display().to_string())?;
            Ok((views, i64::from(*class)))
        })
        .collect()
}

/// Each image's softmax averaged over its views (N x classes).
fn average_probs(net: &ResNet, decoded: &[(Vec<View>, i64)], o: &EvalOptions) -> Result<Tensor> {
    let views_per_image = decoded[0].0.len() as i64;
    Ok(match o.protocol {
        Protocol::Center | Protocol::TenCrop => {
            let flat: Vec<View> = decoded.iter().flat_map(|d| d.0.iter().cloned()).collect();
            let x = contiguous(&views_to_tensor(&flat, o.device), o.format)?;
            let p = net.forward_t(&x, false).softmax(1, Kind::Float);
            p.view([decoded.len() as i64, views_per_image, -1]).mean_dim(1, false, Kind::Float)
        }
        Protocol::MultiScale => {
            // Views of one scale have one size: the image and its mirror go through together.
            let per_image: Vec<Tensor> = decoded
                .iter()
                .map(|(views, _)| {
                    let mut sum: Option<Tensor> = None;
                    for pair in views.chunks(2) {
                        let x = contiguous(&views_to_tensor(pair, o.device), o.format)?;
                        let p = net.forward_t(&x, false).softmax(1, Kind::Float).sum_dim_intlist(
                            0,
                            false,
                            Kind::Float,
                        );
                        sum = Some(match sum {
                            Some(s) => s + p,
                            None => p,
                        });
                    }
                    Ok(sum.expect("at least one scale") / views.len() as f64)
                })
                .collect::<Result<_>>()?;
            Tensor::stack(&per_image, 0)
        }
    })
}

/// Every `len / k`-th index of `0..len`, `k` of them (all when `k >= len`): a spread-out subset of
/// a sorted folder that covers every class.
pub fn spread(len: usize, k: usize) -> Vec<usize> {
    if k >= len {
        return (0..len).collect();
    }
    (0..k).map(|i| i * len / k).collect()
}

/// Replaces every BN layer's running statistics by the average of its batch statistics over
/// `batches` (training mode, no gradients): the "BN statistics averaged over a large training
/// batch" of the paper's release notes, instead of the moving averages. Returns the images seen.
///
/// Each batch's statistics are recovered from the moving-average update the forward pass makes
/// (running = (1 - m) * running + m * batch, m = 0.1) and the running values are restored after
/// it, so the layers' own code is used unchanged.
pub fn reestimate_bn(
    net: &ResNet,
    vs: &nn::VarStore,
    batches: impl Iterator<Item = Result<Tensor>>,
    format: MemoryFormat,
) -> Result<usize> {
    const MOMENTUM: f64 = 0.1; // blocks::batch_norm's (PyTorch's default)
    let _guard = tch::no_grad_guard();
    let vars = vs.variables();
    let mut names: Vec<&String> =
        vars.keys().filter(|n| n.ends_with("running_mean") || n.ends_with("running_var")).collect();
    names.sort();
    let stats: Vec<Tensor> = names.iter().map(|n| vars[*n].shallow_clone()).collect();
    ensure!(!stats.is_empty(), "the network has no BN layers");
    let mut sums: Vec<Tensor> = stats.iter().map(|t| t.zeros_like()).collect();
    let (mut count, mut images) = (0usize, 0usize);
    for x in batches {
        let x = contiguous(&x?, format)?;
        let before: Vec<Tensor> = stats.iter().map(|t| t.copy()).collect();
        let _ = net.forward_t(&x, true);
        for ((s, b), sum) in stats.iter().zip(&before).zip(sums.iter_mut()) {
            *sum += (s - b * (1.0 - MOMENTUM)) / MOMENTUM;
            s.shallow_clone().copy_(b);
        }
        count += 1;
        images += x.size()[0] as usize;
    }
    ensure!(count > 0, "no batches to re-estimate BN statistics over");
    for (s, sum) in stats.iter().zip(&sums) {
        s.shallow_clone().copy_(&(sum / count as f64));
    }
    Ok(images)
}

/// [`reestimate_bn`] over `images` training images of a folder, augmented as in training (the
/// batches that would follow update `after`, fresh draws of the run's seed). Returns the images seen.
pub fn reestimate_bn_from_folder(
    (net, vs, format): (&ResNet, &nn::VarStore, MemoryFormat),
    folder: Arc<ImageFolder>,
    transform: &TrainTransform,
    opts: LoaderOptions,
    after: u64,
    images: usize,
) -> Result<usize> {
    let batches = images.div_ceil(opts.batch_size).max(1);
    let device = vs.device();
    let mut loader = TrainLoader::start(folder, transform.clone(), opts, after, &[])?;
    let iter = (0..batches).map(|_| loader.next_batch().map(|b| b.to_tensors(device).0));
    reestimate_bn(net, vs, iter, format)
}
