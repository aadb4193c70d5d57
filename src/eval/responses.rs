//! Figure 7 (Sec. 4.2, "Analysis of layer responses"): the standard deviation of every 3x3 layer's
//! response, its BN output before the ReLU or the addition, over the test set, for plain-20/56 and
//! ResNet-20/56/110 trained as in Table 6. This module measures; the `cifar_layer_responses`
//! binary composes "train the missing runs, then measure" from the runner and this.

use crate::fsutil::write_csv;
use crate::models::ResNet;
use crate::models::net::Stem;
use crate::shim::{MemoryFormat, contiguous};
use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The networks of Figure 7 as (residual, depth), in the paper's legend order: plain-20/56,
/// ResNet-20/56/110.
pub const FIG7_NETS: [(bool, usize); 5] = [(false, 20), (false, 56), (true, 20), (true, 56), (true, 110)];

/// Where a CIFAR network stands in Figure 7's legend; `None` if it is not in the figure.
pub fn fig7_position(residual: bool, depth: usize) -> Option<usize> {
    FIG7_NETS.iter().position(|&n| n == (residual, depth))
}

/// Logits and, in network order, the response of every 3x3 layer: its BN output before the ReLU
/// or the addition (the quantity of Figure 7), BN in inference mode. Walks the network's layers
/// as its own forward pass does, keeping each 3x3 layer's output before the in-place ReLU; the
/// logits equal `forward_t`'s (tested), which holds the walk to the network it measures.
pub fn forward_with_responses(net: &ResNet, xs: &Tensor) -> (Tensor, Vec<Tensor>) {
    let mut responses = Vec::with_capacity(net.num_3x3_layers());
    let mut h = net.stem_conv_bn().forward_t(xs, false);
    match net.stem {
        // The CIFAR stem is a 3x3 layer too (layer 1 of Figure 7).
        Stem::Cifar(_) => {
            responses.push(h.shallow_clone());
            h = h.relu();
        }
        Stem::ImageNet(_) => h = h.relu_().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false),
    }
    for block in net.stages.iter().flatten() {
        let last = block.layers.len() - 1;
        let mut b = h.shallow_clone();
        for (i, layer) in block.layers.iter().enumerate() {
            b = layer.forward_t(&b, false);
            if layer.conv.kernel == 3 {
                responses.push(b.shallow_clone());
            }
            if i < last {
                b = b.relu();
            }
        }
        if let Some(s) = &block.shortcut {
            // Not in place: `b` may be the response just kept.
            b = &b + s.forward_t(&h, false);
        }
        h = b.relu();
    }
    (net.head(&h), responses)
}

/// Standard deviation of each 3x3 layer's response over every value it takes on `x` (all images,
/// channels and positions), BN in inference mode, in network order. Accumulated over batches in
/// f64: the population standard deviation of the whole set, whatever the batch size.
pub fn layer_stds(net: &ResNet, x: &Tensor, batch: usize, format: MemoryFormat) -> Result<Vec<f64>> {
    ensure!(batch > 0, "batch size 0");
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let layers = net.num_3x3_layers();
    let mut sums = Tensor::zeros([layers as i64, 2], (Kind::Double, x.device()));
    let mut count = vec![0f64; layers];
    let mut start = 0;
    while start < n {
        let len = (batch as i64).min(n - start);
        let xb = contiguous(&x.narrow(0, start, len), format)?;
        let (_, responses) = forward_with_responses(net, &xb);
        ensure!(responses.len() == layers, "{} responses for {layers} 3x3 layers", responses.len());
        let moments: Vec<Tensor> = responses
            .iter()
            .map(|r| {
                let r = r.to_kind(Kind::Double);
                Tensor::stack(&[r.sum(Kind::Double), r.square().sum(Kind::Double)], 0)
            })
            .collect();
        sums += Tensor::stack(&moments, 0);
        for (c, r) in count.iter_mut().zip(&responses) {
            *c += r.numel() as f64;
        }
        start += len;
    }
    let sums = Vec::<f64>::try_from(sums.to_device(Device::Cpu).flatten(0, -1))?;
    Ok(count
        .iter()
        .enumerate()
        .map(|(l, &c)| {
            let mean = sums[2 * l] / c;
            (sums[2 * l + 1] / c - mean * mean).max(0.0).sqrt()
        })
        .collect())
}

/// One row of `runs/fig7/responses.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRow {
    /// The Table 6 run group: `cifar10`, `fashion-mnist-quick`, ...
    pub group: String,
    pub net: String,
    pub depth: usize,
    pub residual: bool,
    pub seed: u64,
    /// 1-based, in network order (1 is the first conv).
    pub layer: usize,
    pub std: f64,
    /// Images the statistics are over.
    pub images: usize,
}

/// Reads `responses.csv`; a missing file is no rows.
pub fn read_responses(path: &Path) -> Result<Vec<ResponseRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.deserialize().map(|row| row.with_context(|| format!("parsing {}", path.display()))).collect()
}

/// Writes `rows` to `path`, keeping the rows of other groups that were there.
pub fn merge_responses(path: &Path, rows: &[ResponseRow]) -> Result<Vec<ResponseRow>> {
    let mut all: Vec<ResponseRow> =
        read_responses(path)?.into_iter().filter(|old| rows.iter().all(|r| r.group != old.group)).collect();
    all.extend(rows.iter().cloned());
    write_csv(path, &all)?;
    Ok(all)
}
