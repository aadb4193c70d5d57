//! The CIFAR training step as one CUDA graph: a ResNet-20 step at batch 128 is hundreds of small
//! kernels, and on a large GPU their launches, not their arithmetic, take the time. After a few
//! eager warm-up steps on a side stream (cuDNN picks its kernels, the momentum buffers exist), one
//! step is captured whole: the batch drawn and augmented from staged device buffers
//! ([`Staged`]), forward, loss, backward and the fused SGD update with the learning rate read from a
//! device scalar. Every later step writes the batch's start and the rate into those buffers and
//! replays the graph: one launch instead of hundreds, and a schedule change needs no new capture.
//!
//! The warm-up runs the program the capture records (after one eager step, which makes the
//! momentum buffers): the staged batch and the fused update reading its rate from the device, so
//! that nothing runs for the first time, lazily loaded kernels included, inside the capture.
//!
//! Capture applies to a single process training from device-resident tensors on a GPU. Elsewhere
//! (the CPU, an image folder's host-decoded batches, data-parallel replicas, a build without the
//! CUDA headers, or a capture that fails) the step runs eagerly, and [`Stepper::for_run`] says why.

use super::feed::{Staged, TrainData};
use super::step::{Rate, Trainer};
use crate::shim::graph::{self, CudaGraph, Graph, graphs_supported};
use anyhow::{Context, Result};
use tch::{Kind, Tensor};

/// Steps before the capture, on the capture's side stream (PyTorch's docs warm up 3): the first
/// eager, the others through the program the capture records.
pub const WARMUP_STEPS: u32 = 3;

/// How each update of a run is issued.
pub struct Stepper {
    mode: Mode,
    /// What the log should say once: the capture failed and the steps run eagerly.
    note: Option<String>,
}

enum Mode {
    /// Op by op.
    Eager,
    /// Steps on the graph's side stream, `left` more before the capture: eager until `program`
    /// exists (it needs the momentum buffers), then through it.
    Warming { graph: Box<dyn Graph>, program: Option<Program>, left: u32 },
    /// The captured step, replayed (or, without a graph, run as captured: see
    /// [`Stepper::staged_without_graph`]).
    Captured(Program),
}

/// The step a capture records and the tensors it reads and writes.
struct Program {
    graph: Option<Box<dyn Graph>>,
    /// The learning rate it reads.
    lr: Tensor,
    /// What it writes: the batch's loss and misclassified count.
    loss: Tensor,
    wrong: Tensor,
}

/// What one update measured, on the device.
pub struct StepOut {
    pub loss: Tensor,
    pub wrong: Tensor,
    pub images: u64,
}

impl Stepper {
    /// Every step op by op.
    pub fn eager() -> Self {
        Stepper { mode: Mode::Eager, note: None }
    }

    /// A run's steps: captured as a CUDA graph where `want`ed and applicable, else eager, with the
    /// reason capture does not apply (`None` when it does, or was not wanted).
    pub fn for_run(want: bool, trainer: &Trainer, data: &mut dyn TrainData) -> (Self, Option<String>) {
        if !want {
            return (Self::eager(), None);
        }
        let device = trainer.vs.device();
        // (Staged batches are only made where they could be used.)
        let staged = device.is_cuda() && data.staged().is_some();
        let setting =
            Setting { device, graphs_in_build: graphs_supported(), replica: trainer.is_replica(), staged };
        if let Some(why) = setting.blocker() {
            return (Self::eager(), Some(why.to_string()));
        }
        match CudaGraph::new(trainer.vs.device()) {
            Ok(graph) => (Self::capturing_into(Box::new(graph)), None),
            Err(e) => (Self::eager(), Some(format!("{e:#}"))),
        }
    }

    /// Steps that warm up, then capture the step into `graph` and replay it (the tests pass a
    /// stand-in for a CUDA graph). The data must have staged batches.
    pub fn capturing_into(graph: Box<dyn Graph>) -> Self {
        Stepper { mode: Mode::Warming { graph, program: None, left: WARMUP_STEPS }, note: None }
    }

    /// Runs the program a capture records, op by op and without a graph: the staged batch and the
    /// rate in a device scalar. Like a capture it needs the momentum buffers (one eager step
    /// first). On the CPU its steps equal eager fused-SGD steps bit for bit (tests/capture.rs),
    /// which checks what is captured without a GPU.
    pub fn staged_without_graph(trainer: &Trainer) -> Self {
        Stepper { mode: Mode::Captured(Program::new(trainer)), note: None }
    }

    /// Whether the steps now replay a captured graph.
    pub fn is_captured(&self) -> bool {
        matches!(&self.mode, Mode::Captured(p) if p.graph.is_some())
    }

    /// What the log should say about the steps since the last call: a capture that failed.
    pub fn take_note(&mut self) -> Option<String> {
        self.note.take()
    }

    /// Update `it` at rate `lr`. A capture that fails, or a warm-up step through the program it
    /// would record, is abandoned and the steps go on eagerly, with a note ([`Stepper::take_note`]).
    pub fn step(
        &mut self,
        trainer: &mut Trainer,
        data: &mut dyn TrainData,
        it: u64,
        lr: f64,
    ) -> Result<StepOut> {
        match &mut self.mode {
            Mode::Eager => eager_step(trainer, data, it, lr),
            Mode::Warming { graph, program, left } if *left > 0 => {
                *left -= 1;
                let saved = program.is_some().then(|| Saved::of(trainer));
                let out = graph::on_side_stream(graph.as_mut(), || match program {
                    Some(p) => p.run(trainer, data, it, lr),
                    None => {
                        let out = eager_step(trainer, data, it, lr)?;
                        *program = Some(Program::new(trainer));
                        Ok(out)
                    }
                });
                match (out, saved) {
                    // The program the capture would record failed before any capture: as a
                    // failed capture, the run goes on eagerly, this update again from the state
                    // before it (whatever of it the failure had applied is undone).
                    (Err(e), Some(saved)) => {
                        saved.restore(trainer);
                        self.mode = Mode::Eager;
                        self.note = Some(format!(
                            "the warm-up before the CUDA-graph capture failed ({e:#}); the steps run eagerly"
                        ));
                        eager_step(trainer, data, it, lr)
                    }
                    (out, _) => out,
                }
            }
            Mode::Warming { .. } => {
                let Mode::Warming { graph, program, .. } = std::mem::replace(&mut self.mode, Mode::Eager)
                else {
                    unreachable!()
                };
                let program = program.unwrap_or_else(|| Program::new(trainer));
                match program.capture(graph, trainer, data) {
                    Ok(p) => self.mode = Mode::Captured(p),
                    Err(e) => {
                        self.note = Some(format!(
                            "the step could not be captured as a CUDA graph ({e:#}); it runs eagerly"
                        ))
                    }
                }
                self.step(trainer, data, it, lr)
            }
            Mode::Captured(p) => p.run(trainer, data, it, lr),
        }
    }
}

/// What decides whether a run's step can be captured.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub device: tch::Device,
    /// This build has CUDA graphs (the CUDA runtime's headers were found).
    pub graphs_in_build: bool,
    /// The trainer is a data-parallel replica.
    pub replica: bool,
    /// The data's batches can be drawn on the device (staged).
    pub staged: bool,
}

impl Setting {
    /// Why the step cannot be captured, if it cannot.
    pub fn blocker(&self) -> Option<&'static str> {
        if !self.device.is_cuda() {
            Some("CUDA graphs are for GPUs, and this run trains on the CPU")
        } else if !self.graphs_in_build {
            Some(
                "this build has no CUDA graphs: the CUDA runtime's headers were not found when the shim was compiled",
            )
        } else if self.replica {
            Some(
                "a data-parallel replica averages its gradients through c10d, which the capture does not include",
            )
        } else if !self.staged {
            Some("this data's batches are decoded on the host, not drawn on the device")
        } else {
            None
        }
    }
}

/// The trainer's weights, BN statistics and momentum buffers, copied before a warm-up step through
/// the capture's program: what a failure in it puts back.
struct Saved {
    /// (the live tensor, its copy).
    vars: Vec<(Tensor, Tensor)>,
    buffers: Vec<Option<Tensor>>,
}

impl Saved {
    fn of(trainer: &Trainer) -> Self {
        let vars =
            trainer.vs.variables().into_values().map(|v| (v.shallow_clone(), v.detach().copy())).collect();
        let buffers = trainer.opt.buffers.iter().map(|b| b.as_ref().map(|t| t.detach().copy())).collect();
        Saved { vars, buffers }
    }

    fn restore(self, trainer: &mut Trainer) {
        tch::no_grad(|| {
            for (mut live, copy) in self.vars {
                live.copy_(&copy);
            }
        });
        for (live, copy) in trainer.opt.buffers.iter_mut().zip(self.buffers) {
            match (live.as_mut(), copy) {
                (Some(live), Some(copy)) => {
                    tch::no_grad(|| live.copy_(&copy));
                }
                (_, copy) => *live = copy,
            }
        }
    }
}

/// A step op by op: the feed's batch, the rate as a number.
fn eager_step(trainer: &mut Trainer, data: &mut dyn TrainData, it: u64, lr: f64) -> Result<StepOut> {
    let (x, y) = data.batch(it)?;
    let (loss, wrong) = trainer.step(&x, &y, lr)?;
    Ok(StepOut { loss, wrong, images: y.size()[0] as u64 })
}

fn staged(data: &mut dyn TrainData) -> Result<&mut dyn Staged> {
    data.staged().context("this data has no staged batches")
}

impl Program {
    /// Before its first run: outputs to be written by it.
    fn new(trainer: &Trainer) -> Self {
        let dev = trainer.vs.device();
        // The fused kernel reads the rate as a float on CUDA and as a double on the CPU.
        let kind = if dev.is_cuda() { Kind::Float } else { Kind::Double };
        Program {
            graph: None,
            lr: Tensor::zeros([], (kind, dev)),
            loss: Tensor::zeros([], (Kind::Float, dev)),
            wrong: Tensor::zeros([], (Kind::Int64, dev)),
        }
    }

    /// Records the program into `graph` (nothing runs); on failure the capture is abandoned.
    fn capture(
        mut self,
        mut graph: Box<dyn Graph>,
        trainer: &mut Trainer,
        data: &mut dyn TrainData,
    ) -> Result<Self> {
        anyhow::ensure!(trainer.opt.has_buffers(), "the momentum buffers do not exist yet");
        let staged = staged(data)?;
        // As PyTorch's whole-network capture does: no gradients before it, so that the backward
        // pass makes them in the graph's memory.
        trainer.opt.zero_grad()?;
        let lr = &self.lr;
        let (loss, wrong) = graph::capture(graph.as_mut(), || {
            let (x, y) = staged.batch();
            trainer.step_at(&x, &y, Rate::Device(lr))
        })?;
        (self.loss, self.wrong, self.graph) = (loss, wrong, Some(graph));
        Ok(self)
    }

    /// Update `it` at `lr`: the buffers written, then the graph replayed (or the program run).
    fn run(&mut self, trainer: &mut Trainer, data: &mut dyn TrainData, it: u64, lr: f64) -> Result<StepOut> {
        let staged = staged(data)?;
        staged.stage(it);
        let _ = self.lr.fill_(lr);
        match &mut self.graph {
            Some(g) => g.replay()?,
            None => {
                let (x, y) = staged.batch();
                (self.loss, self.wrong) = trainer.step_at(&x, &y, Rate::Device(&self.lr))?;
            }
        }
        let images = staged.images();
        Ok(StepOut { loss: self.loss.shallow_clone(), wrong: self.wrong.shallow_clone(), images })
    }
}
