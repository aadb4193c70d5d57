//! `doctor --selftest`: the checks a new machine (and a first run on a GPU) runs before anything
//! else, each a PASS, FAIL or SKIP line, within a minute. On every device: bf16 autocast, the
//! fused SGD update against the multi-tensor one, the captured step's program run without a graph
//! against eager steps, and a one-rank process group (Gloo on the CPU, NCCL on a GPU). On a GPU
//! also the step captured as a CUDA graph against eager steps, and a capture forced to fail that
//! must fall back and leave the process able to draw random numbers and capture again.

use crate::bench::{FixedBatch, synthetic_cifar};
use crate::data::{Prepared, TensorOptions};
use crate::models::{CifarNet, NetSpec};
use crate::shim::dist::{Backend, ProcessGroup, Rendezvous};
use crate::shim::{Autocast, MemoryFormat};
use crate::train::{SgdSettings, Staged, Stepper, TensorFeed, TrainData, Trainer};
use anyhow::{Context, Result, bail, ensure};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// A check that applies: what it measured. One that does not: why.
pub enum Outcome {
    Pass(String),
    Skip(String),
}

/// One line of the report.
pub struct Check {
    pub name: &'static str,
    /// `Err`: the check failed (an error or a panic), with why.
    pub outcome: Result<Outcome, String>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(Outcome::Pass(s)) => write!(f, "PASS  {}: {s}", self.name),
            Ok(Outcome::Skip(s)) => write!(f, "SKIP  {}: {s}", self.name),
            Err(e) => write!(f, "FAIL  {}: {e}", self.name),
        }
    }
}

type CheckFn = fn(Device) -> Result<Outcome>;

/// Every check, in the order they run.
const CHECKS: [(&str, CheckFn); 6] = [
    ("bf16 autocast", bf16_autocast),
    ("fused SGD = multi-tensor SGD", fused_sgd),
    ("captured program, run without a graph = eager steps", program_without_graph),
    ("one-rank process group", one_rank_group),
    ("CUDA graph: 20 captured steps = 20 eager steps", captured_steps),
    ("CUDA graph: a failed capture falls back", failed_capture),
];

/// Runs every check on `device`, printing each line as it ends (through `report`).
pub fn run(device: Device, mut report: impl FnMut(&Check)) -> Vec<Check> {
    CHECKS
        .iter()
        .map(|&(name, check)| {
            let outcome = match std::panic::catch_unwind(|| check(device)) {
                Ok(r) => r.map_err(|e| format!("{e:#}")),
                Err(p) => Err(p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into())),
            };
            let c = Check { name, outcome };
            report(&c);
            c
        })
        .collect()
}

fn resnet8(seed: u64, device: Device) -> Result<Trainer> {
    let net = NetSpec::Cifar(CifarNet::resnet(8));
    let format = crate::train::Layout::Auto.resolve(device);
    let mut t = Trainer::with_format(&net, SgdSettings::PAPER, seed, device, format)?;
    t.opt.fused = true;
    Ok(t)
}

fn batch(device: Device) -> (Tensor, Tensor) {
    tch::manual_seed(3);
    (Tensor::randn([32, 3, 32, 32], (Kind::Float, device)), Tensor::randint(10, [32], (Kind::Int64, device)))
}

/// The largest difference between two sets of tensors, relative to each tensor's scale, and the
/// least any tensor of `b` moved from `start` (what training changed): the second bounds the
/// first, a hundred times over, where the two should agree up to rounding.
fn apart(
    a: &HashMap<String, Tensor>,
    b: &HashMap<String, Tensor>,
    start: &HashMap<String, Tensor>,
) -> (f64, f64) {
    let rel = |x: &Tensor, y: &Tensor| {
        (x - y).abs().max().double_value(&[]) / y.abs().max().double_value(&[]).max(f64::MIN_POSITIVE)
    };
    let diff = a.iter().map(|(n, t)| rel(t, &b[n])).fold(0.0, f64::max);
    let moved = b.iter().map(|(n, t)| rel(&start[n], t)).fold(f64::INFINITY, f64::min);
    (diff, moved)
}

fn copies(t: &Trainer) -> HashMap<String, Tensor> {
    t.vs.variables().into_iter().map(|(n, v)| (n, v.detach().copy())).collect()
}

/// Convolutions compute in bf16 under autocast and in fp32 after it; a bf16 step keeps the
/// weights fp32 and its loss within 2% of fp32's.
fn bf16_autocast(device: Device) -> Result<Outcome> {
    let support = crate::env::TorchInfo::current().cpu_bf16;
    let (x, y) = batch(device);
    let (mut fp32, mut bf16) = (resnet8(0, device)?, resnet8(0, device)?);
    bf16.precision = crate::train::Precision::Bf16;
    let conv = &bf16.net.stem_conv_bn().conv;
    let inside = {
        let _ac = Autocast::bf16(device)?;
        tch::no_grad(|| conv.forward(&x)).kind()
    };
    let after = tch::no_grad(|| conv.forward(&x)).kind();
    ensure!(
        inside == Kind::BFloat16 && after == Kind::Float,
        "convolution in {inside:?} under autocast, {after:?} after"
    );
    let (l32, _) = fp32.step(&x, &y, 0.1)?;
    let (l16, _) = bf16.step(&x, &y, 0.1)?;
    let (l32, l16) = (l32.double_value(&[]), l16.double_value(&[]));
    ensure!((l32 - l16).abs() < 0.02 * l32, "loss {l16} in bf16 against {l32} in fp32");
    ensure!(bf16.vs.variables().values().all(|t| t.kind() == Kind::Float), "weights left fp32");
    let cpu = if device.is_cuda() { String::new() } else { format!("; CPU bf16: {}", support.describe()) };
    Ok(Outcome::Pass(format!("loss {l16:.4} in bf16, {l32:.4} in fp32{cpu}")))
}

/// Three updates by torch.optim.SGD(fused=True)'s kernel against three by the multi-tensor path,
/// from the same weights and batch: equal bits on the CPU; on a GPU the two kernels may round
/// differently, far below what the updates changed.
fn fused_sgd(device: Device) -> Result<Outcome> {
    let (x, y) = batch(device);
    let start = copies(&resnet8(0, device)?);
    let mut runs = Vec::new();
    for fused in [false, true] {
        let mut t = resnet8(0, device)?;
        t.opt.fused = fused;
        for k in 0..3 {
            let _ = t.step(&x, &y, 0.1 / (k + 1) as f64)?;
        }
        runs.push(copies(&t));
    }
    let (diff, moved) = apart(&runs[1], &runs[0], &start);
    if device.is_cuda() {
        ensure!(
            diff * 100.0 < moved,
            "fused and multi-tensor {diff:.2e} apart, the updates moved {moved:.2e}"
        );
    } else {
        ensure!(diff == 0.0, "fused and multi-tensor updates differ by {diff:.2e} on the CPU");
    }
    Ok(Outcome::Pass(format!(
        "{diff:.1e} apart after 3 updates (relative; they moved the weights {moved:.1e})"
    )))
}

/// 12 steps through the program a capture records, op by op without a graph, against 12 eager
/// steps from the same state: bit-identical on the CPU (the same kernels); on a GPU within
/// rounding of the rate read as float32 and cuDNN's nondeterministic sums.
fn program_without_graph(device: Device) -> Result<Outcome> {
    let data = Prepared::new(&synthetic_cifar(160), 0, device)?;
    let start = copies(&resnet8(1, device)?);
    let mut runs = Vec::new();
    for staged in [false, true] {
        let mut t = resnet8(1, device)?;
        let mut feed = TensorFeed::new(&data, 5, 32, &TensorOptions::default());
        feed.start(0, &[])?;
        let mut stepper = Stepper::eager();
        for it in 0..12 {
            let _ = stepper.step(&mut t, &mut feed, it, 0.1)?;
            if it == 0 && staged {
                stepper = Stepper::staged_without_graph(&t);
            }
        }
        runs.push(copies(&t));
    }
    let (diff, moved) = apart(&runs[1], &runs[0], &start);
    if device.is_cuda() {
        ensure!(diff * 100.0 < moved, "{diff:.2e} apart, training moved the weights by {moved:.2e}");
    } else {
        ensure!(diff == 0.0, "the staged program and eager steps differ by {diff:.2e} on the CPU");
    }
    Ok(Outcome::Pass(format!("{diff:.1e} apart after 12 steps (relative; training moved them {moved:.1e})")))
}

/// A process group of one rank on this device (Gloo on the CPU, NCCL on a GPU), through a
/// TCPStore this process hosts: an all-reduce and a broadcast leave the tensor as it was, and a
/// barrier returns.
fn one_rank_group(device: Device) -> Result<Outcome> {
    let backend = Backend::for_device(device);
    if !backend.compiled_in() {
        let what = match backend {
            Backend::Gloo => "Gloo (apt-get install libgloo-dev, then rebuild)",
            Backend::Nccl => "NCCL (the CUDA runtime and NCCL headers of the torch wheel's NVIDIA packages)",
        };
        return Ok(Outcome::Skip(format!("this build has no {what}")));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let rv = Rendezvous { host: "127.0.0.1".into(), port, host_it: true, prefix: "/selftest/".into() };
    let group = ProcessGroup::new(&rv, 0, 1, device, std::time::Duration::from_secs(30))?;
    let t = Tensor::arange(6, (Kind::Float, device));
    group.all_reduce_sum(&t)?;
    group.broadcast(&t, 0)?;
    group.barrier()?;
    let want = Tensor::arange(6, (Kind::Float, device));
    ensure!(t.equal(&want), "the all-reduce of one rank changed its tensor: {t:?}");
    Ok(Outcome::Pass(format!("{backend}: all-reduce, broadcast, barrier")))
}

/// 20 steps captured as a CUDA graph (3 warm-up steps, the capture, replays) against 20 eager
/// steps from the same weights and batches: the losses and weights agree to far below what the
/// 20 steps changed (rounding: the rate read as float32, cuDNN's nondeterministic sums).
fn captured_steps(device: Device) -> Result<Outcome> {
    if !device.is_cuda() {
        return Ok(Outcome::Skip("needs a GPU".into()));
    }
    let data = Prepared::new(&synthetic_cifar(320), 0, device)?;
    let start = copies(&resnet8(1, device)?);
    let mut runs = Vec::new();
    for capture in [false, true] {
        let mut t = resnet8(1, device)?;
        let mut feed = TensorFeed::new(&data, 5, 32, &TensorOptions::default());
        feed.start(0, &[])?;
        let (mut stepper, why_not) = Stepper::for_run(capture, &t, &mut feed);
        if let Some(why) = why_not {
            bail!("the step is not captured: {why}");
        }
        let mut losses = Vec::new();
        for it in 0..20 {
            let out = stepper.step(&mut t, &mut feed, it, 0.1 * 0.9f64.powi(it as i32))?;
            losses.push(out.loss.double_value(&[]));
        }
        if let Some(note) = stepper.take_note() {
            bail!("{note}");
        }
        ensure!(stepper.is_captured() == capture, "captured: {}, wanted {capture}", stepper.is_captured());
        runs.push((losses, copies(&t)));
    }
    let (diff, moved) = apart(&runs[1].1, &runs[0].1, &start);
    ensure!(diff * 100.0 < moved, "weights {diff:.2e} apart, the 20 steps moved them {moved:.2e}");
    let loss_diff = runs[0].0.iter().zip(&runs[1].0).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let loss_moved = (runs[0].0[0] - runs[0].0[19]).abs();
    ensure!(
        loss_diff * 100.0 < loss_moved,
        "losses {loss_diff:.2e} apart, training moved them {loss_moved:.2e}"
    );
    Ok(Outcome::Pass(format!(
        "weights {diff:.1e} apart (relative; the steps moved them {moved:.1e}), losses {loss_diff:.1e}"
    )))
}

/// A fixed batch whose third staged draw, the capture's, does what a CUDA graph cannot capture:
/// copy a value to the host (refused by libtorch) or synchronise the device (refused by CUDA,
/// which invalidates the capture, so that ending it fails). tch panics on either error.
struct SyncInCapture {
    batch: FixedBatch,
    draws: std::cell::Cell<u32>,
    device_sync: bool,
}

impl TrainData for SyncInCapture {
    fn train_len(&self) -> usize {
        self.batch.train_len()
    }
    fn has_validation(&self) -> bool {
        false
    }
    fn start(&mut self, iteration: u64, skipped: &[usize]) -> Result<()> {
        self.batch.start(iteration, skipped)
    }
    fn batch(&mut self, iteration: u64) -> Result<(Tensor, Tensor)> {
        TrainData::batch(&mut self.batch, iteration)
    }
    fn evaluate(
        &mut self,
        net: &crate::models::ResNet,
        format: MemoryFormat,
    ) -> Result<crate::train::Evaluation> {
        self.batch.evaluate(net, format)
    }
    fn staged(&mut self) -> Option<&mut dyn Staged> {
        Some(self)
    }
}

impl Staged for SyncInCapture {
    fn stage(&mut self, iteration: u64) {
        Staged::stage(&mut self.batch, iteration)
    }
    fn batch(&self) -> (Tensor, Tensor) {
        self.draws.set(self.draws.get() + 1);
        if self.draws.get() == crate::train::capture::WARMUP_STEPS {
            match (self.device_sync, self.batch.x.device()) {
                (true, Device::Cuda(i)) => tch::Cuda::synchronize(i as i64),
                _ => drop(self.batch.x.double_value(&[0, 0, 0, 0])), // a device-to-host copy
            }
        }
        Staged::batch(&self.batch)
    }
    fn images(&self) -> u64 {
        Staged::images(&self.batch)
    }
}

/// A capture broken by an operation it cannot record, once refused by libtorch and once by CUDA:
/// each time the run falls back to eager steps and says so, and the process is left whole: random
/// numbers can be drawn (the next run's initial weights), and a new capture succeeds.
fn failed_capture(device: Device) -> Result<Outcome> {
    if !device.is_cuda() {
        return Ok(Outcome::Skip("needs a GPU".into()));
    }
    let mut said = Vec::new();
    for device_sync in [false, true] {
        let (x, y) = batch(device);
        let mut data = SyncInCapture { batch: FixedBatch { x, y }, draws: 0.into(), device_sync };
        let mut t = resnet8(1, device)?;
        let (mut stepper, why_not) = Stepper::for_run(true, &t, &mut data);
        ensure!(why_not.is_none(), "not captured at all: {why_not:?}");
        for it in 0..6 {
            let _ = stepper.step(&mut t, &mut data, it, 0.1)?;
        }
        let note = stepper.take_note().context("the failed capture was not reported")?;
        ensure!(!stepper.is_captured() && note.contains("runs eagerly"), "{note}");
        let r = Tensor::f_randn([1000], (Kind::Float, device)).context("randn after the failed capture")?;
        ensure!(r.isfinite().all().int64_value(&[]) == 1, "randn after the failed capture");
        let mut next =
            resnet8(2, device).context("a new network's initial weights after the failed capture")?;
        let (x, y) = batch(device);
        let mut fixed = FixedBatch { x, y };
        let (mut again, _) = Stepper::for_run(true, &next, &mut fixed);
        for it in 0..6 {
            let _ = again.step(&mut next, &mut fixed, it, 0.1)?;
        }
        ensure!(
            again.is_captured(),
            "a capture after the failed one did not succeed: {:?}",
            again.take_note()
        );
        let why = note.split_once(" (").map_or(note.as_str(), |(_, w)| w);
        said.push(why.chars().take(70).collect::<String>());
    }
    Ok(Outcome::Pass(format!(
        "fell back twice ({}; {}), then randn and a new capture worked",
        said[0], said[1]
    )))
}
