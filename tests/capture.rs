//! The CUDA-graph step (src/train/capture.rs) on the CPU: the program a capture records (staged
//! batches, the learning rate in a device scalar, the fused update) trains exactly as eager steps
//! do, and capture says why it does not apply where it does not. The capture and replay themselves
//! need a GPU: `target/release/bench_train_loop --device cuda` runs them.

mod common;

use resnet_repro::bench::synthetic_cifar;
use resnet_repro::data::augment::{EpochPlan, StagedPlan, locate};
use resnet_repro::data::{Prepared, TensorOptions};
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::shim::MemoryFormat;
use resnet_repro::shim::graph::CudaGraph;
use resnet_repro::train::capture::capture_blocker;
use resnet_repro::train::{Precision, Stepper, TensorFeed, TrainData, Trainer};
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
    let mut trainer = Trainer::with_format(&net, (0.9, 1e-4), 7, Device::Cpu, format).unwrap();
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
    let gpu = Device::Cuda(0);
    assert_eq!(capture_blocker(gpu, true, false, true), None);
    let why = |d, supported, replica, staged| capture_blocker(d, supported, replica, staged).unwrap();
    assert!(why(Device::Cpu, true, false, true).contains("CPU"));
    assert!(why(gpu, false, false, true).contains("headers"));
    assert!(why(gpu, true, true, true).contains("data-parallel"));
    assert!(why(gpu, true, false, false).contains("decoded on the host"));

    // A CPU run asks for it and trains eagerly, told why.
    let data = Prepared::new(&synthetic_cifar(16), 0, Device::Cpu).unwrap();
    let net = NetSpec::Cifar(CifarNet::resnet(8));
    let trainer = Trainer::with_format(&net, (0.9, 1e-4), 0, Device::Cpu, MemoryFormat::Contiguous).unwrap();
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
            Trainer::with_format(&net, (0.9, 1e-4), 1, Device::Cpu, MemoryFormat::Contiguous).unwrap();
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
