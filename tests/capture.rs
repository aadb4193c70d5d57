//! The CUDA-graph step (src/train/capture.rs) on the CPU: the program a capture records (staged
//! batches, the learning rate in a device scalar, the fused update) trains exactly as eager steps
//! do, capture says why it does not apply where it does not, and a capture that fails (an operation
//! that cannot be captured, or the capture's end) is abandoned and the run goes on eagerly, with
//! the process left as it was (on a stand-in for the CUDA graph). The capture and replay
//! themselves need a GPU: `target/release/doctor --selftest` and `bench_train_loop --device cuda`
//! run them.

mod common;

use resnet_repro::bench::synthetic_cifar;
use resnet_repro::data::augment::{EpochPlan, StagedPlan, locate};
use resnet_repro::data::{Prepared, TensorOptions};
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::shim::MemoryFormat;
use resnet_repro::shim::graph::{CudaGraph, Graph};
use resnet_repro::train::capture::Setting;
use resnet_repro::train::{Precision, SgdSettings, Stepper, TensorFeed, TrainData, Trainer};
use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

fn bits(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous().to_kind(Kind::Float);
    let v: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `steps` updates of a ResNet-8 on 40 images in batches of 8 (5 per epoch), the rate changing
/// every step: the first step eager (it makes the momentum buffers, as the warm-up before a
/// capture does), the rest by `later`. Returns each step's (loss, wrong) and the trainer.
fn train(
    data: &Prepared,
    setup: (Option<usize>, Precision, MemoryFormat),
    later: fn(&Trainer) -> Stepper,
    steps: u64,
) -> (Vec<(f32, i64)>, Trainer) {
    let net = NetSpec::Cifar(CifarNet::resnet(8));
    let (bn_batch, precision, format) = setup;
    let mut trainer = Trainer::with_format(&net, SgdSettings::PAPER, 7, Device::Cpu, format).unwrap();
    (trainer.bn_batch, trainer.precision, trainer.opt.fused) = (bn_batch, precision, true);
    let mut feed = TensorFeed::new(data, 3, 8, &TensorOptions::default());
    feed.start(0, &[]).unwrap();
    let mut stepper = Stepper::eager();
    let mut out = Vec::new();
    for it in 0..steps {
        let lr = 0.1 * 0.8f64.powi(it as i32);
        let s = stepper.step(&mut trainer, &mut feed, it, lr).unwrap();
        assert_eq!(s.images, 8);
        out.push((s.loss.double_value(&[]) as f32, s.wrong.int64_value(&[])));
        if it == 0 {
            stepper = later(&trainer);
        }
    }
    (out, trainer)
}

#[test]
fn the_captured_program_trains_bit_identically_to_eager_fused_steps() {
    let _rng = common::rng_lock();
    let data = Prepared::new(&synthetic_cifar(40), 0, Device::Cpu).unwrap();
    let setups = [
        (None, Precision::Fp32, MemoryFormat::Contiguous),
        (Some(4), Precision::Bf16, MemoryFormat::ChannelsLast),
    ];
    for setup in setups {
        // 12 steps: across two epoch boundaries, so the staged plan is rewritten twice.
        let (eager, a) = train(&data, setup, |_| Stepper::eager(), 12);
        let (staged, b) = train(&data, setup, Stepper::staged_without_graph, 12);
        assert_eq!(staged, eager, "{setup:?}: losses and misclassified counts, step by step");
        let (va, vb) = (a.vs.variables(), b.vs.variables());
        for (name, t) in &va {
            assert_eq!(bits(t), bits(&vb[name]), "{setup:?}: {name}");
        }
        for (i, (x, y)) in a.opt.buffers.iter().zip(&b.opt.buffers).enumerate() {
            assert_eq!(bits(x.as_ref().unwrap()), bits(y.as_ref().unwrap()), "{setup:?}: momentum {i}");
        }
    }
}

#[test]
fn staged_batches_are_the_epoch_plans_batches_for_every_replica_part() {
    let _rng = common::rng_lock(); // (it draws from libtorch's generator)
    let data = Prepared::new(&synthetic_cifar(40), 0, Device::Cpu).unwrap();
    let (x, y) = (&data.train_x, &data.train_y);
    for part in [(0, 1), (0, 2), (1, 2)] {
        let mut staged = StagedPlan::new(9, 40, 8, 4, true, part, Device::Cpu);
        assert_eq!(staged.images(), 8 / part.1);
        for it in [0u64, 4, 5, 13, 7, 2] {
            let (epoch, k) = locate(it, 40, 8);
            let plan = EpochPlan::new(9, epoch, 40, 8, 4, true, Device::Cpu);
            let (ex, ey) = plan.part(k, part, x, y, 4);
            staged.stage(it);
            let (sx, sy) = staged.part(x, y);
            assert!(sx.equal(&ex) && sy.equal(&ey), "part {part:?}, iteration {it}");
        }
    }
    assert_eq!(locate(13, 40, 8), (2, 3));
    assert_eq!(locate(13, 43, 8), (2, 3), "the last partial batch of an epoch is dropped");
}

#[test]
fn capture_falls_back_and_says_why_where_it_does_not_apply() {
    let _rng = common::rng_lock(); // (it draws from libtorch's generator)
    let gpu = Device::Cuda(0);
    let fine = Setting { device: gpu, graphs_in_build: true, replica: false, staged: true };
    assert_eq!(fine.blocker(), None);
    let why = |s: Setting| s.blocker().unwrap();
    assert!(why(Setting { device: Device::Cpu, ..fine }).contains("CPU"));
    assert!(why(Setting { graphs_in_build: false, ..fine }).contains("headers"));
    assert!(why(Setting { replica: true, ..fine }).contains("data-parallel"));
    assert!(why(Setting { staged: false, ..fine }).contains("decoded on the host"));

    // A CPU run asks for it and trains eagerly, told why.
    let data = Prepared::new(&synthetic_cifar(16), 0, Device::Cpu).unwrap();
    let net = NetSpec::Cifar(CifarNet::resnet(8));
    let trainer =
        Trainer::with_format(&net, SgdSettings::PAPER, 0, Device::Cpu, MemoryFormat::Contiguous).unwrap();
    let mut feed = TensorFeed::new(&data, 0, 8, &TensorOptions::default());
    let (stepper, reason) = Stepper::for_run(true, &trainer, &mut feed);
    assert!(!stepper.is_captured() && reason.unwrap().contains("CPU"));
    let (_, reason) = Stepper::for_run(false, &trainer, &mut feed);
    assert_eq!(reason, None, "not wanted: nothing to say");

    // The graph itself refuses a CPU, and without a GPU fails with an error rather than a crash.
    let e = CudaGraph::new(Device::Cpu).err().unwrap();
    assert!(format!("{e}").contains("CUDA device"), "{e}");
    if !tch::Cuda::is_available() {
        let e = CudaGraph::new(gpu).err().expect("no GPU here");
        assert!(format!("{e:#}").contains("CUDA graph"), "{e:#}");
    }
}

#[test]
fn the_step_benchmarks_fixed_batch_is_drawn_by_the_captured_program_as_it_is() {
    let _rng = common::rng_lock();
    let (x, y) = (
        Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu)),
        Tensor::randint(10, [8], (Kind::Int64, Device::Cpu)),
    );
    let mut batch = resnet_repro::bench::FixedBatch { x: x.copy(), y: y.copy() };
    let net = NetSpec::Cifar(CifarNet::resnet(8));
    let make = || {
        let mut t =
            Trainer::with_format(&net, SgdSettings::PAPER, 1, Device::Cpu, MemoryFormat::Contiguous).unwrap();
        t.opt.fused = true;
        t
    };
    let (mut eager, mut staged) = (make(), make());
    for t in [&mut eager, &mut staged] {
        let _ = t.step(&x, &y, 0.1).unwrap(); // the momentum buffers
    }
    let mut stepper = Stepper::staged_without_graph(&staged);
    for it in 1..4 {
        let lr = 0.1 / it as f64;
        let (want, _) = eager.step(&x, &y, lr).unwrap();
        let got = stepper.step(&mut staged, &mut batch, it, lr).unwrap();
        assert_eq!(got.images, 8);
        assert_eq!(bits(&got.loss), bits(&want), "step {it}");
    }
    assert!(batch.evaluate(&staged.net, MemoryFormat::Contiguous).is_err(), "nothing to evaluate on");
}

/// What the stand-in graph models of the process: the stream being captured, and, as libtorch's
/// default CUDA generator does, a capture state set when a capture begins and cleared by its
/// epilogue. While it is set, the next draw of random numbers fails ("Offset increment outside
/// graph capture"): the next run's initial weights.
#[derive(Default, Debug)]
struct Process {
    capturing: bool,
    generator_capturing: bool,
    on_side: bool,
    calls: Vec<&'static str>,
}

/// A stand-in for a CUDA graph on the CPU: work issued during its "capture" runs at once (there is
/// no stream to record it), and `fail_end` makes its end fail as libtorch 2.11's capture_end does
/// when the capture was invalidated: the stream's capture is over, but the generator's epilogue
/// (and the allocator's pool) was skipped, for `abandon` to undo.
struct StandIn {
    process: Arc<Mutex<Process>>,
    fail_end: bool,
}

impl Graph for StandIn {
    fn enter_side(&mut self) -> anyhow::Result<()> {
        let mut p = self.process.lock().unwrap();
        p.calls.push("enter");
        p.on_side = true;
        Ok(())
    }
    fn leave_side(&mut self) -> anyhow::Result<()> {
        let mut p = self.process.lock().unwrap();
        p.calls.push("leave");
        p.on_side = false;
        Ok(())
    }
    fn begin(&mut self) -> anyhow::Result<()> {
        let mut p = self.process.lock().unwrap();
        p.calls.push("begin");
        (p.capturing, p.generator_capturing, p.on_side) = (true, true, true);
        Ok(())
    }
    fn end(&mut self) -> anyhow::Result<()> {
        let mut p = self.process.lock().unwrap();
        p.calls.push("end");
        p.capturing = false;
        anyhow::ensure!(
            !self.fail_end,
            "CUDA error: operation failed due to a previous error during capture"
        );
        (p.generator_capturing, p.on_side) = (false, false);
        Ok(())
    }
    fn abandon(&mut self) {
        let mut p = self.process.lock().unwrap();
        p.calls.push("abandon");
        (p.capturing, p.generator_capturing, p.on_side) = (false, false, false);
    }
    fn replay(&mut self) -> anyhow::Result<()> {
        anyhow::bail!("the stand-in never replays: its captures fail")
    }
}

/// Where the stand-in's run fails.
#[derive(Clone, Copy, PartialEq)]
enum Fail {
    /// An operation of the captured step (its staged draw).
    InCapture,
    /// The capture's end.
    AtEnd,
    /// The staged draw of a warm-up step, on the side stream before any capture.
    InWarmup,
}

/// A fixed batch whose staged draw runs a libtorch operation that fails while the stand-in is
/// capturing (or warming up), as an operation that cannot be captured fails inside a real capture
/// (tch panics).
struct FailsInCapture {
    batch: resnet_repro::bench::FixedBatch,
    process: Arc<Mutex<Process>>,
    fail: Fail,
}

impl TrainData for FailsInCapture {
    fn train_len(&self) -> usize {
        self.batch.train_len()
    }
    fn has_validation(&self) -> bool {
        false
    }
    fn start(&mut self, iteration: u64, skipped: &[usize]) -> anyhow::Result<()> {
        self.batch.start(iteration, skipped)
    }
    fn batch(&mut self, iteration: u64) -> anyhow::Result<(Tensor, Tensor)> {
        self.process.lock().unwrap().calls.push("eager");
        TrainData::batch(&mut self.batch, iteration)
    }
    fn evaluate(
        &mut self,
        net: &resnet_repro::models::ResNet,
        format: MemoryFormat,
    ) -> anyhow::Result<resnet_repro::train::Evaluation> {
        self.batch.evaluate(net, format)
    }
    fn staged(&mut self) -> Option<&mut dyn resnet_repro::train::Staged> {
        Some(self)
    }
}

impl resnet_repro::train::Staged for FailsInCapture {
    fn stage(&mut self, iteration: u64) {
        resnet_repro::train::Staged::stage(&mut self.batch, iteration)
    }
    fn batch(&self) -> (Tensor, Tensor) {
        let (capturing, warming) = {
            let mut p = self.process.lock().unwrap();
            p.calls.push("staged");
            (p.capturing, p.on_side && !p.capturing)
        };
        if (self.fail == Fail::InCapture && capturing) || (self.fail == Fail::InWarmup && warming) {
            let _ = self.batch.x.narrow(0, 0, 1000); // out of range: libtorch throws, tch panics
        }
        resnet_repro::train::Staged::batch(&self.batch)
    }
    fn images(&self) -> u64 {
        resnet_repro::train::Staged::images(&self.batch)
    }
}

/// Six steps of a ResNet-8 (seed 1, fused SGD) on one batch with a stand-in capture that fails
/// where `fail` says: the losses, the note, the trainer and what the stand-in saw.
fn failing_capture(fail: Fail) -> (Vec<f32>, Option<String>, Trainer, Process) {
    let fail_end = fail == Fail::AtEnd;
    let process = Arc::new(Mutex::new(Process::default()));
    let batch = resnet_repro::bench::FixedBatch {
        x: Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu)),
        y: Tensor::randint(10, [8], (Kind::Int64, Device::Cpu)),
    };
    let mut data = FailsInCapture { batch, process: Arc::clone(&process), fail };
    let mut trainer = fused_resnet8(1);
    let mut stepper = Stepper::capturing_into(Box::new(StandIn { process: Arc::clone(&process), fail_end }));
    let mut losses = Vec::new();
    let mut note = None;
    for it in 0..6 {
        let out = stepper.step(&mut trainer, &mut data, it, 0.1).unwrap();
        losses.push(out.loss.double_value(&[]) as f32);
        note = note.or(stepper.take_note());
    }
    assert!(!stepper.is_captured());
    let p = std::mem::take(&mut *process.lock().unwrap());
    (losses, note, trainer, p)
}

fn fused_resnet8(seed: u64) -> Trainer {
    let net = NetSpec::Cifar(CifarNet::resnet(8));
    let mut t =
        Trainer::with_format(&net, SgdSettings::PAPER, seed, Device::Cpu, MemoryFormat::Contiguous).unwrap();
    t.opt.fused = true;
    t
}

#[test]
fn a_capture_failing_inside_the_step_is_abandoned_and_the_run_goes_on_eagerly() {
    let _rng = common::rng_lock();
    let before = fused_resnet8(2).vs.variables();
    tch::manual_seed(11);
    let (losses, note, trainer, p) = failing_capture(Fail::InCapture);
    let note = note.expect("the fallback is said");
    assert!(note.contains("could not be captured") && note.contains("runs eagerly"), "{note}");
    assert!(
        note.contains("an operation failed while being captured: start (0) + length (1000) exceeds"),
        "{note}"
    );
    assert!(!note.contains("Exception raised from"), "libtorch's C++ frames: {note}");
    // Three warm-up steps on the side stream, the first eager (it makes the momentum buffers), the
    // others through the program the capture records; then the capture, begun and abandoned, and
    // eager steps from there on.
    let warm = ["enter", "eager", "leave", "enter", "staged", "leave", "enter", "staged", "leave"];
    assert_eq!(p.calls[..9], warm);
    assert_eq!(p.calls[9..], ["begin", "staged", "abandon", "eager", "eager", "eager"]);
    assert!(!p.capturing && !p.generator_capturing && !p.on_side, "{p:?}");
    // Nothing of the failed capture ran: the same bits as six eager steps.
    assert_six_eager_steps(&losses, &trainer);
    // The next run draws its initial weights as if no capture had been tried.
    let next = fused_resnet8(2).vs.variables();
    for (name, t) in &next {
        assert_eq!(bits(t), bits(&before[name]), "{name}");
    }
}

#[test]
fn a_capture_whose_end_fails_is_abandoned_leaving_the_generator_as_it_was() {
    let _rng = common::rng_lock();
    let before = fused_resnet8(2).vs.variables();
    let (losses, note, _, p) = failing_capture(Fail::AtEnd);
    let note = note.expect("the fallback is said");
    assert!(note.contains("previous error during capture") && note.contains("runs eagerly"), "{note}");
    assert_eq!(p.calls[9..], ["begin", "staged", "end", "abandon", "eager", "eager", "eager"]);
    // libtorch's failed end leaves the generator capturing; abandoning the capture restores it.
    assert!(!p.generator_capturing && !p.capturing && !p.on_side, "{p:?}");
    assert!(losses.iter().all(|l| l.is_finite()) && losses.len() == 6);
    let next = fused_resnet8(2).vs.variables();
    for (name, t) in &next {
        assert_eq!(bits(t), bits(&before[name]), "{name}");
    }
}

/// `losses` and `trainer`'s weights are six eager steps' from seed 11's batch, bit for bit.
fn assert_six_eager_steps(losses: &[f32], trainer: &Trainer) {
    tch::manual_seed(11);
    let (x, y) = (
        Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu)),
        Tensor::randint(10, [8], (Kind::Int64, Device::Cpu)),
    );
    let mut eager = fused_resnet8(1);
    let want: Vec<f32> =
        (0..6).map(|_| eager.step(&x, &y, 0.1).unwrap().0.double_value(&[]) as f32).collect();
    assert_eq!(losses, want);
    let (a, b) = (trainer.vs.variables(), eager.vs.variables());
    for (name, t) in &a {
        assert_eq!(bits(t), bits(&b[name]), "{name}");
    }
}

#[test]
fn a_warm_up_step_that_fails_is_a_failed_capture_and_the_run_goes_on_eagerly() {
    let _rng = common::rng_lock();
    tch::manual_seed(11);
    let (losses, note, trainer, p) = failing_capture(Fail::InWarmup);
    let note = note.expect("the fallback is said");
    assert!(
        note.contains("the warm-up before the CUDA-graph capture failed") && note.contains("run eagerly"),
        "{note}"
    );
    assert!(note.contains("start (0) + length (1000) exceeds"), "{note}");
    // The first warm-up step eager, the second through the program: it fails, back on the main
    // stream, and that update and every later one are eager; no capture is begun.
    assert_eq!(
        p.calls,
        ["enter", "eager", "leave", "enter", "staged", "leave", "eager", "eager", "eager", "eager", "eager"]
    );
    assert!(!p.capturing && !p.on_side, "{p:?}");
    assert_six_eager_steps(&losses, &trainer);
}
