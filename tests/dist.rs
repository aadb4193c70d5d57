//! c10d through the shim, for real: two processes (this test binary run again, one per rank) meet
//! through a TCPStore and talk over Gloo. Checks the collectives' results, and that a peer that
//! hangs or dies makes the others fail within the timeout with a message naming the rank and the
//! operation instead of hanging the job.

use resnet_repro::data::Protocol;
use resnet_repro::detect::DetectionSet;
use resnet_repro::detect::{
    self,
    train::{DetectionRecipe, DetectionRow},
};
use resnet_repro::dist::{Launch, Replicas};
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::shim::dist::{Backend, ProcessGroup, Rendezvous};
use resnet_repro::train::metrics::read_rows;
use resnet_repro::train::{SgdSettings, Trainer};
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tch::nn::ModuleT;
use tch::{Kind, Tensor};

/// Set in the children: `<scenario> <rank> <world> <port>`.
const CHILD: &str = "RESNET_REPRO_DIST_CHILD";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `scenario` on `world` ranks, each a child running the test `child`; their outputs by rank.
fn launch(scenario: &str, world: usize) -> Vec<Output> {
    launch_in(scenario, world, Path::new("/nonexistent"))
}

/// The same, with RESNET_REPRO_DIST_DIR set to `dir`.
fn launch_in(scenario: &str, world: usize, dir: &Path) -> Vec<Output> {
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", "child", "--nocapture", "--test-threads=1"])
                .env(CHILD, format!("{scenario} {rank} {world} {port}"))
                .env("RESNET_REPRO_DIST_DIR", dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Every rank exited successfully, saying "OK rank <r>"; else its output, after `what`.
fn assert_every_rank_ok(outs: &[Output], what: &str) {
    for (rank, o) in outs.iter().enumerate() {
        assert!(
            o.status.success() && text(o).contains(&format!("OK rank {rank}")),
            "{what} rank {rank}:\n{}",
            text(o)
        );
    }
}

/// One rank of a scenario: does nothing unless started by `launch`.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD) else { return };
    let v: Vec<&str> = spec.split(' ').collect();
    let (scenario, rank, world, port): (&str, usize, usize, u16) =
        (v[0], v[1].parse().unwrap(), v[2].parse().unwrap(), v[3].parse().unwrap());
    if scenario == "replicas" {
        return replicas(rank, world, port);
    }
    if let Some(bn) = scenario.strip_prefix("train") {
        return train(rank, world, port, bn);
    }
    if let Some(how) = scenario.strip_prefix("folder") {
        return train_folder(rank, world, port, how);
    }
    if scenario == "detector" {
        return train_detector(rank, world, port);
    }
    if scenario == "detector-unreadable" {
        return resume_unreadable(rank, world, port);
    }
    if scenario == "reducer-die" {
        return reducer_die(rank, world, port);
    }
    let rv = Rendezvous { host: "127.0.0.1".into(), port, host_it: rank == 0, prefix: "/test/".into() };
    let timeout = Duration::from_secs(if scenario == "collectives" { 60 } else { 3 });
    let pg = ProcessGroup::new(&rv, rank, world, tch::Device::Cpu, timeout).unwrap();
    match scenario {
        "collectives" => collectives(&pg),
        "hang" if rank == 1 => std::thread::sleep(Duration::from_secs(8)),
        "die" if rank == 1 => std::process::exit(3),
        _ => {
            let started = Instant::now();
            let err = pg.all_reduce_sum(&Tensor::ones([4], (Kind::Float, tch::Device::Cpu))).unwrap_err();
            println!("FAILED after {:.1} s: {err:#}", started.elapsed().as_secs_f64());
            std::process::exit(0);
        }
    }
}

fn collectives(pg: &ProcessGroup) {
    let r = pg.rank as f64;
    // Sum: rank r holds (r + 1) * [1, 2, 3]; the sum over 2 ranks is 3 * [1, 2, 3].
    let t = Tensor::from_slice(&[1f32, 2., 3.]) * (r + 1.0);
    pg.all_reduce_sum(&t).unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [3., 6., 9.]);
    // Two in flight at once, waited for in reverse order; doubles too.
    let a = Tensor::full([1000], r, (Kind::Double, tch::Device::Cpu));
    let b = Tensor::full([7], 10.0 * r, (Kind::Float, tch::Device::Cpu));
    let (wa, wb) = (pg.start_all_reduce_sum(&a).unwrap(), pg.start_all_reduce_sum(&b).unwrap());
    wb.wait().unwrap();
    wa.wait().unwrap();
    assert_eq!(a.sum(Kind::Double).double_value(&[]), 1000.0);
    assert_eq!(Vec::<f32>::try_from(&b).unwrap(), [10f32; 7]);
    // Broadcast from rank 1: everyone ends with rank 1's values, int64 included.
    let c = Tensor::from_slice(&[r as i64 * 5 + 1, 7]);
    pg.broadcast(&c, 1).unwrap();
    assert_eq!(Vec::<i64>::try_from(&c).unwrap(), [6, 7]);
    pg.barrier().unwrap();
    println!("OK rank {}", pg.rank);
}

/// Rank `rank` of `world` replicas on the CPU, from the variables torchrun would set.
fn join(rank: usize, world: usize, port: u16) -> Replicas {
    join_with(rank, world, port, Duration::from_secs(60))
}

fn join_with(rank: usize, world: usize, port: u16, timeout: Duration) -> Replicas {
    let vars = [
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("MASTER_ADDR", "127.0.0.1".into()),
        ("MASTER_PORT", port.to_string()),
    ];
    let Launch::Rank(env) =
        Launch::from_vars(|k| vars.iter().find(|v| v.0 == k).map(|v| v.1.clone())).unwrap()
    else {
        panic!("a rank")
    };
    Replicas::connect(&env, tch::Device::Cpu, timeout).unwrap()
}

/// Two replicas averaging during the backward pass (c10d's reducer, a 3 s timeout): two steps
/// together (the reducer rebuilds its buckets in the second), then rank 1 dies and rank 0's third
/// step must fail, naming the rank and what it was doing.
fn reducer_die(rank: usize, world: usize, port: u16) {
    let dp = std::sync::Arc::new(join_with(rank, world, port, Duration::from_secs(3)));
    let net = NetSpec::Cifar(CifarNet { in_channels: 1, ..CifarNet::resnet(8) });
    let format = resnet_repro::shim::MemoryFormat::ChannelsLast;
    let mut t = Trainer::with_format(&net, SgdSettings::PAPER, 0, tch::Device::Cpu, format).unwrap();
    t.join(dp).unwrap();
    let x = Tensor::randn([8, 1, 12, 12], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::randint(10, [8], (Kind::Int64, tch::Device::Cpu));
    for _ in 0..2 {
        let _ = t.step(&x, &y, 0.1).unwrap();
    }
    if rank == 1 {
        std::process::exit(3);
    }
    let started = Instant::now();
    let err = t.step(&x, &y, 0.1).unwrap_err();
    println!("FAILED after {:.1} s: {err:#}", started.elapsed().as_secs_f64());
    std::process::exit(0); // the reducer of a failed pass is not dropped
}

/// Rank `rank` of the replicas test: a ResNet-8 built from seed `rank` (the ranks start different),
/// met through torchrun's variables.
fn replicas(rank: usize, world: usize, port: u16) {
    let mut dp = join(rank, world, port);
    dp.bucket_bytes = 4096; // many buckets in flight, and tensors larger than one
    let net = NetSpec::Cifar(CifarNet { in_channels: 1, ..CifarNet::resnet(8) });
    let hyper = SgdSettings::PAPER;
    let format = resnet_repro::shim::MemoryFormat::ChannelsLast;
    let mut t = Trainer::with_format(&net, hyper, rank as u64, tch::Device::Cpu, format).unwrap();
    // Rank 0's variables everywhere: the same as a trainer built from seed 0.
    dp.broadcast_vars(&t.vs).unwrap();
    let reference = Trainer::with_format(&net, hyper, 0, tch::Device::Cpu, format).unwrap();
    assert_eq!(checksum(&t.vs), checksum(&reference.vs), "rank {rank}: not rank 0's variables");
    // Each rank's own batch; its averaged gradients must be the mean of every rank's, which each
    // rank recomputes here from the same weights (BN statistics included).
    let batch = |r: usize| {
        tch::manual_seed(100 + r as i64);
        (
            Tensor::randn([6, 1, 12, 12], (Kind::Float, tch::Device::Cpu)),
            Tensor::randint(10, [6], (Kind::Int64, tch::Device::Cpu)),
        )
    };
    let grads_of = |t: &mut Trainer, r: usize| -> (Vec<Tensor>, Vec<Tensor>) {
        let (x, y) = batch(r);
        let loss = t.net.forward_t(&x, true).cross_entropy_for_logits(&y);
        t.opt.zero_grad().unwrap();
        loss.backward();
        (t.opt.params.iter().map(|p| p.grad().copy()).collect(), buffers(&t.vs))
    };
    let mut expected: Option<(Vec<Tensor>, Vec<Tensor>)> = None;
    for r in 0..world {
        let mut fresh = Trainer::with_format(&net, hyper, 0, tch::Device::Cpu, format).unwrap();
        let (g, b) = grads_of(&mut fresh, r);
        expected = Some(match expected {
            None => (g, b),
            Some((eg, eb)) => (add(&eg, &g), add(&eb, &b)),
        });
    }
    let (eg, eb) = expected.unwrap();
    let scale = 1.0 / world as f64;
    let (mean_g, mean_b): (Vec<Tensor>, Vec<Tensor>) =
        (eg.iter().map(|e| e * scale).collect(), eb.iter().map(|e| e * scale).collect());
    // The effect guarded: this rank's own gradients and statistics, not averaged.
    let (own_g, own_b) = grads_of(&mut t, rank);
    dp.average_grads(&t.opt.params).unwrap();
    let got: Vec<Tensor> = t.opt.params.iter().map(Tensor::grad).collect();
    common::assert_far_below(
        common::relative_difference_of(got.iter().zip(&mean_g)),
        common::relative_difference_of(own_g.iter().zip(&mean_g)),
        &format!("rank {rank}: averaged gradients and their mean"),
    );
    dp.average_buffers(&t.vs).unwrap();
    common::assert_far_below(
        common::relative_difference_of(buffers(&t.vs).iter().zip(&mean_b)),
        common::relative_difference_of(own_b.iter().zip(&mean_b)),
        &format!("rank {rank}: averaged running statistics and their mean"),
    );
    assert_eq!(dp.sum(&[rank as f64, 1.5]).unwrap(), [(world * (world - 1) / 2) as f64, 1.5 * world as f64]);
    println!("OK rank {rank}");
}

/// The recipe of the data-parallel detector: 2 scenes an update (one a rank), a checkpoint each.
fn detector_recipe(iterations: u64) -> DetectionRecipe {
    DetectionRecipe { checkpoint_every: 1, ..common::detect::tiny_recipe(iterations) }
}

/// Rank `rank` of 2 training the tiny detector in $RESNET_REPRO_DIST_DIR/run from its own initial
/// weights: 1 update (each rank then writes its weights as `rank<r>-1.safetensors`), then resumed
/// from that checkpoint to 2 (`rank<r>-2`); then the test scenes detected as replicas (each its
/// share, gathered) must be those this rank detects alone.
fn train_detector(rank: usize, world: usize, port: u16) {
    tch::set_num_threads(1);
    let dir = std::path::PathBuf::from(std::env::var("RESNET_REPRO_DIST_DIR").unwrap());
    let dp = join(rank, world, port);
    let set = common::detect::tiny_scenes();
    let files = resnet_repro::experiment::RunDir { path: dir.join("run") }.files();
    for its in [1, 2] {
        let (mut vs, det) = common::detect::tiny_detector(3 + rank as i64);
        detect::train::train(&det, &mut vs, &set, &detector_recipe(its), (&files, 7, "dp"), Some(&dp))
            .unwrap();
        resnet_repro::models::save_weights(&vs, &dir.join(format!("rank{rank}-{its}.safetensors"))).unwrap();
        if its == 2 {
            let shared = detect::train::detect_shared(&det, &set, (1, tch::Device::Cpu), Some(&dp)).unwrap();
            let alone = detect::train::detect_all(&det, &set, 1, tch::Device::Cpu).unwrap();
            assert_eq!(shared.len(), alone.len());
            for (i, (a, b)) in shared.iter().zip(&alone).enumerate() {
                assert!(
                    a.boxes.equal(&b.boxes) && a.scores.equal(&b.scores),
                    "rank {rank}: image {i}'s detections"
                );
                assert!(a.labels.equal(&b.labels), "rank {rank}: image {i}'s labels");
            }
            assert!(alone.iter().map(|d| d.scores.size()[0]).sum::<i64>() > 0, "no detections to gather");
        }
    }
    println!("OK rank {rank}");
}

/// Rank `rank` of 2 resuming the tiny detector from $RESNET_REPRO_DIST_DIR/run, whose only
/// checkpoint cannot be read: rank 0 fails to resume, and rank 1, instead of waiting for it, fails
/// too, saying so.
fn resume_unreadable(rank: usize, world: usize, port: u16) {
    tch::set_num_threads(1);
    let dir = std::path::PathBuf::from(std::env::var("RESNET_REPRO_DIST_DIR").unwrap());
    let dp = join_with(rank, world, port, Duration::from_secs(30));
    let files = resnet_repro::experiment::RunDir { path: dir.join("run") }.files();
    let (mut vs, det) = common::detect::tiny_detector(3);
    let set = common::detect::tiny_scenes();
    let err = detect::train::train(&det, &mut vs, &set, &detector_recipe(2), (&files, 7, "dp"), Some(&dp))
        .map(|_| ())
        .unwrap_err();
    let expected = if rank == 0 { "can be read" } else { "rank 0 could not resume the run" };
    assert!(format!("{err:#}").contains(expected), "rank {rank}: {err:#}");
    println!("OK rank {rank}");
}

/// The tiny detector after one update of a run alone whose gradient is `grads_of` ranks' mean:
/// each rank's images, flips and sampling seed as `train` gives them.
fn detector_after_one_update(ranks: &[usize]) -> std::collections::HashMap<String, Tensor> {
    let set = common::detect::tiny_scenes();
    let (vs, det) = common::detect::tiny_detector(3);
    detect::train::freeze(&det, 1).unwrap();
    let mut opt = resnet_repro::train::optim::Sgd::new(&vs, 0.9, 1e-4);
    let r = detector_recipe(1);
    let mut sum: Option<Vec<Tensor>> = None;
    for &rank in ranks {
        let (images, flips) = detect::train::replica_plan(&r, set.len(), 7, (0, rank, 2));
        let batch = DetectionSet::batch(&set, &images, &flips, tch::Device::Cpu).unwrap();
        tch::manual_seed(detect::train::sample_seed(7, 0, rank));
        let pass = det.forward(&batch.images, &batch.sizes, Some(&batch.targets)).unwrap();
        opt.zero_grad().unwrap();
        pass.losses.unwrap().total().backward();
        let g: Vec<Tensor> = opt.params.iter().map(|p| p.grad().copy()).collect();
        sum = Some(match sum {
            None => g,
            Some(s) => s.iter().zip(&g).map(|(a, b)| a + b).collect(),
        });
    }
    tch::no_grad(|| {
        for (p, g) in opt.params.iter().zip(sum.unwrap()) {
            p.grad().copy_(&(g * (1.0 / ranks.len() as f64)));
        }
    });
    opt.step(r.lr).unwrap();
    vs.variables()
}

#[test]
fn a_rank_0_that_cannot_resume_fails_the_others_at_once() {
    if !gloo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run/ckpt-00000001");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(ckpt.join("state.json"), "not json").unwrap();
    let started = Instant::now();
    let outs = launch_in("detector-unreadable", 2, dir.path());
    assert_every_rank_ok(&outs, "");
    assert!(started.elapsed() < Duration::from_secs(25), "rank 1 waited {:?}", started.elapsed());
}

#[test]
fn two_ranks_train_the_detector_on_the_mean_gradient_of_their_shares_and_detect_as_one_process() {
    if !gloo() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let outs = launch_in("detector", 2, dir.path());
    assert_every_rank_ok(&outs, "");
    let read = |name: &str| -> std::collections::HashMap<String, Tensor> {
        Tensor::read_safetensors(dir.path().join(name)).unwrap().into_iter().collect()
    };
    // The replicas stay equal to the bit, though rank 1 started from other weights.
    for its in [1, 2] {
        let (a, b) = (read(&format!("rank0-{its}.safetensors")), read(&format!("rank1-{its}.safetensors")));
        assert!(a.iter().all(|(n, t)| t.equal(&b[n])), "the replicas differ after {its} updates");
    }
    // The first update is one of rank 0's initial weights with the mean of the ranks' gradients.
    let got = read("rank0-1.safetensors");
    let mean = detector_after_one_update(&[0, 1]);
    let rank0_alone = detector_after_one_update(&[0]);
    common::assert_far_below(
        common::relative_difference(&got, &mean),
        common::relative_difference(&rank0_alone, &mean),
        "the replicas' first update and one with the mean gradient",
    );
    let rows: Vec<DetectionRow> = read_rows(&dir.path().join("run/metrics.csv")).unwrap();
    assert_eq!(rows.iter().map(|r| r.iteration).collect::<Vec<_>>(), [1, 2], "rank 0's rows, once each");
}

/// The tiny data-parallel experiment: ResNet-8 on 512 synthetic Fashion-MNIST-shaped images, a
/// global batch of 128, 20 iterations; `[train]` gets `extra`.
fn tiny_experiment(extra: &str) -> resnet_repro::experiment::Experiment {
    let text = format!(
        "name = \"dp\"\npreset = \"quick\"\nseeds = [0]\n[data]\ndataset = \"fashion-mnist\"\n\
         [train]\nbatch_size = 128\nlr = 0.1\nmilestones = []\niterations = 20\nlog_every = 5\n\
         eval_every = 10\ncheckpoint_every = 10\n{extra}\n[[runs]]\ndepth = 8\nresidual = true\n"
    );
    toml::from_str(&text).unwrap()
}

fn runner_in(dir: &std::path::Path) -> resnet_repro::experiment::RunnerOptions {
    common::runner_over(&dir.join("data"), &dir.join("runs"), (512, 64))
}

/// Rank `rank` of `world` training the tiny experiment in $RESNET_REPRO_DIST_DIR (`bn`: empty for
/// replicas; `-half`: replicas with `bn_batch = 64`, stopping at iteration 10; `-alone`: one
/// process without replicas, `bn_batch = 64`; `-whole`: one process, BN over all 128).
fn train(rank: usize, world: usize, port: u16, bn: &str) {
    tch::set_num_threads(1);
    let dir = std::path::PathBuf::from(std::env::var("RESNET_REPRO_DIST_DIR").unwrap());
    let mut o = runner_in(&dir);
    let extra = if bn == "-alone" || bn == "-half" { "bn_batch = 64" } else { "" };
    if bn == "-half" {
        o.train.stop_after = Some(10);
    }
    if bn.is_empty() || bn == "-half" {
        o.train.replicas = Some(std::sync::Arc::new(join(rank, world, port)));
    }
    resnet_repro::experiment::run_experiment(&tiny_experiment(extra), &o).unwrap();
    println!("OK rank {rank}");
}

#[test]
fn two_ranks_of_64_train_as_one_process_with_bn_batch_64() {
    if !gloo() {
        return;
    }
    let [dp, alone, whole, resumed] = [(); 4].map(|_| tempfile::tempdir().unwrap());
    for d in [&dp, &alone, &whole, &resumed] {
        common::write_fashion_mnist(&d.path().join("data/fashion-mnist"), 512, 64, true);
    }
    assert_every_rank_ok(&launch_in("train", 2, dp.path()), "");
    // The last: 2 replicas to iteration 10, then one process to the end from their checkpoint.
    for (scenario, world, d) in [
        ("train-alone", 1, &alone),
        ("train-whole", 1, &whole),
        ("train-half", 2, &resumed),
        ("train-alone", 1, &resumed),
    ] {
        for out in launch_in(scenario, world, d.path()) {
            assert!(out.status.success(), "{scenario}: {}", text(&out));
            if d.path() == resumed.path() && world == 1 {
                assert!(text(&out).contains("(iteration 10)"), "did not resume: {}", text(&out));
            }
        }
    }
    let run = |d: &tempfile::TempDir| {
        let runs = resnet_repro::experiment::Store::new(d.path().join("runs")).runs().unwrap();
        assert_eq!(runs.len(), 1);
        runs.into_iter().next().unwrap().dir
    };
    let (a, b) = (run(&dp), run(&alone));
    same_curves(&a, &b);
    // The effect guarded: BN over all 128 images (no bn_batch) trains measurably otherwise.
    let effect = largest_difference(&b, &run(&whole));
    common::assert_far_below(largest_difference(&a, &b), effect, "2 ranks of 64 and bn_batch 64");
    // Resumed at another world size: the uninterrupted run's curve and weights.
    let r = run(&resumed);
    same_curves(&r, &b);
    common::assert_far_below(largest_difference(&r, &b), effect, "2 ranks, then 1 process");
    // Only rank 0 wrote: one metrics file, one set of checkpoints.
    assert!(a.final_record().unwrap().is_some_and(|f| f.replicas == 2));
    assert!(r.final_record().unwrap().is_some_and(|f| f.replicas == 1));
}

/// The tiny ImageNet experiment: ResNet-18 on 32-pixel crops of the folder of
/// `common::write_image_folder(_, 3, (8, 3), true)`, a global batch of 8, 6 iterations (2 epochs),
/// a centre-crop validation every 2, then the 10-crop and multi-scale tests after BN re-estimation.
fn folder_experiment(seed: u64, extra: &str) -> resnet_repro::experiment::Experiment {
    let text = format!(
        "name = \"dpf\"\npreset = \"quick\"\nseeds = [{seed}]\n[data]\ndataset = \"imagenet\"\n\
         eval_batch_size = 4\nfinal_protocols = [\"ten-crop\", \"multi-scale\"]\nbn_reestimate_images = 16\n\
         transform = {{ min_side = 36, max_side = 48, crop = 32 }}\n\
         geometry = {{ resize = 36, crop = 32, scales = [32, 40] }}\n\
         [train]\nbatch_size = 8\nlr = 0.05\nmilestones = []\niterations = 6\nlog_every = 2\n\
         eval_every = 2\ncheckpoint_every = 2\n{extra}\n[[runs]]\ndepth = 18\nresidual = true\nshortcut = \"B\"\n"
    );
    toml::from_str(&text).unwrap()
}

/// Rank `rank` of `world` training the folder experiment in $RESNET_REPRO_DIST_DIR (`how`: empty
/// for replicas; `-half`: replicas stopping at iteration 2, with `bn_batch = 4`, the same thing
/// named so that one process can resume them; `-alone`: one process with `bn_batch = 4`;
/// `-whole`: one process, BN over all 8).
fn train_folder(rank: usize, world: usize, port: u16, how: &str) {
    tch::set_num_threads(1);
    let dir = std::path::PathBuf::from(std::env::var("RESNET_REPRO_DIST_DIR").unwrap());
    let seed = seed_breaking_rank_1();
    let mut o = runner_in(&dir);
    o.data = resnet_repro::data::DataOptions::new(dir.join("data"));
    o.loader.skip_corrupt = true;
    let extra = if how == "-alone" || how == "-half" { "bn_batch = 4" } else { "" };
    if how == "-half" {
        o.train.stop_after = Some(2);
    }
    if how.is_empty() || how == "-half" {
        o.train.replicas = Some(std::sync::Arc::new(join(rank, world, port)));
    }
    resnet_repro::experiment::run_experiment(&folder_experiment(seed, extra), &o).unwrap();
    println!("OK rank {rank}");
}

/// A seed whose first epoch puts the folder's broken file (index 8 of 25) in rank 1's half of a
/// batch of 8, so that rank 0 learns of it only from rank 1.
fn seed_breaking_rank_1() -> u64 {
    (0..100)
        .find(|&s| {
            let order = resnet_repro::data::loader::epoch_order(s, 0, 25);
            let p = order.iter().position(|&i| i == 8).unwrap();
            p < 24 && p % 8 >= 4
        })
        .unwrap()
}

#[test]
fn on_an_image_folder_two_ranks_of_4_train_and_test_as_one_process_with_bn_batch_4() {
    if !gloo() {
        return;
    }
    let [dp, alone, resumed, whole] = [(); 4].map(|_| tempfile::tempdir().unwrap());
    for d in [&dp, &alone, &resumed, &whole] {
        common::write_image_folder(&d.path().join("data/imagenet"), 3, (8, 3), true);
    }
    for (scenario, world, d) in [
        ("folder", 2, &dp),
        ("folder-alone", 1, &alone),
        ("folder-half", 2, &resumed),
        ("folder-alone", 1, &resumed),
        ("folder-whole", 1, &whole),
    ] {
        assert_every_rank_ok(&launch_in(scenario, world, d.path()), scenario);
    }
    let run = |d: &tempfile::TempDir| {
        let runs = resnet_repro::experiment::Store::new(d.path().join("runs")).runs().unwrap();
        assert_eq!(runs.len(), 1);
        runs.into_iter().next().unwrap().dir
    };
    let (a, b, r) = (run(&dp), run(&alone), run(&resumed));
    // The effect guarded: BN over all 8 images of a batch instead of groups of 4.
    let effect = largest_difference(&b, &run(&whole));
    for (other, what) in [(&a, "2 ranks of 4 and bn_batch 4"), (&r, "2 ranks, then 1 process")] {
        common::assert_far_below(largest_difference(other, &b), effect, what);
        let (mo, mb) = (other.metrics().unwrap(), b.metrics().unwrap());
        assert_eq!(mo.iter().map(|m| m.iteration).collect::<Vec<_>>(), [2, 4, 6]);
        for (x, y) in mo.iter().zip(&mb) {
            // Losses of about 2: 1e-4 is 5e-5 of them, far above float32 rounding (~1e-7 a step).
            assert!((x.train_loss - y.train_loss).abs() < 1e-4, "{x:?}\n{y:?}");
            // One of the 9 validation images may flip between near-tied classes.
            assert!(
                (x.val_error.unwrap() - y.val_error.unwrap()).abs() <= 100.0 / 9.0 + 1e-9,
                "{x:?}\n{y:?}"
            );
            // Met by rank 1 only, counted by rank 0.
            assert_eq!((x.skipped_images, y.skipped_images), (1, 1), "{x:?}\n{y:?}");
        }
        for protocol in [Protocol::TenCrop, Protocol::MultiScale] {
            let (e, f) =
                (other.evaluation(protocol).unwrap().unwrap(), b.evaluation(protocol).unwrap().unwrap());
            assert_eq!((e.images, e.views, e.bn_reestimated_over), (9, f.views, Some(16)), "{e:?}");
            assert_eq!((e.top1_error, e.top5_error), (f.top1_error, f.top5_error), "{e:?}\n{f:?}");
            println!("{protocol}: top-1 {:.2}%, top-5 {:.2}%", e.top1_error, e.top5_error);
        }
    }
    assert!(a.final_record().unwrap().is_some_and(|f| f.replicas == 2));
}

/// Two runs' metrics rows agree (within float tolerance; one image's prediction may flip).
fn same_curves(a: &resnet_repro::experiment::RunDir, b: &resnet_repro::experiment::RunDir) {
    let (ma, mb) = (a.metrics().unwrap(), b.metrics().unwrap());
    assert_eq!(ma.len(), 4);
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x.iteration, y.iteration);
        // Losses of about 2: 1e-4 is 5e-5 of them, far above float32 rounding (~1e-7 a step).
        assert!((x.train_loss - y.train_loss).abs() < 1e-4, "{x:?}\n{y:?}");
        // An image whose two top logits nearly tie may flip: one image at most.
        assert!((x.train_error - y.train_error).abs() <= 100.0 / 640.0 + 1e-9, "{x:?}\n{y:?}");
        assert_eq!(x.test_error.is_some(), y.test_error.is_some());
        if let (Some(p), Some(q)) = (x.test_error, y.test_error) {
            assert!((p - q).abs() <= 100.0 / 64.0 + 1e-9, "{x:?}\n{y:?}");
        }
    }
}

/// Two runs' final weights (and BN statistics), by name.
fn final_weights(d: &resnet_repro::experiment::RunDir) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(d.files().weights).unwrap().into_iter().collect()
}

/// How far apart two runs' final weights are, relative to each tensor's scale.
fn largest_difference(a: &resnet_repro::experiment::RunDir, b: &resnet_repro::experiment::RunDir) -> f64 {
    common::relative_difference(&final_weights(a), &final_weights(b))
}

fn checksum(vs: &tch::nn::VarStore) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Copies of the BN running statistics, in name order.
fn buffers(vs: &tch::nn::VarStore) -> Vec<Tensor> {
    resnet_repro::models::running_stats(vs).iter().map(Tensor::copy).collect()
}

fn add(a: &[Tensor], b: &[Tensor]) -> Vec<Tensor> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

#[test]
fn replicas_start_from_rank_0_and_average_gradients_and_running_statistics() {
    if !gloo() {
        return;
    }
    assert_every_rank_ok(&launch("replicas", 2), "");
}

/// Whether this build has Gloo: a test needing it fails without, naming the package (or skips,
/// saying so, where the user opted out: [`common::prerequisite`]).
fn gloo() -> bool {
    common::prerequisite(
        Backend::Gloo.compiled_in(),
        "this build has no Gloo: apt-get install libgloo-dev (.ci/run installs it); the next build notices it",
    )
}

#[test]
fn two_ranks_sum_broadcast_and_meet_over_gloo() {
    if !gloo() {
        return;
    }
    assert_every_rank_ok(&launch("collectives", 2), "");
}

#[test]
fn a_peer_that_hangs_or_dies_fails_the_others_within_the_timeout_naming_rank_and_operation() {
    if !gloo() {
        return;
    }
    for scenario in ["hang", "die"] {
        let outs = launch(scenario, 2);
        let t = text(&outs[0]);
        let line = t
            .lines()
            .find_map(|l| l.split_once("FAILED after "))
            .unwrap_or_else(|| panic!("{scenario}: {t}"))
            .1;
        let secs: f64 = line.split(' ').next().unwrap().parse().unwrap();
        assert!(secs < 10.0, "{scenario}: the 3 s timeout took {secs} s: {line}");
        assert!(line.contains("rank 0 of 2 (gloo): all-reduce of 4 Float values"), "{scenario}: {line}");
    }
}

#[test]
fn a_peer_that_dies_fails_the_backward_pass_that_averages_during_it() {
    if !gloo() {
        return;
    }
    let outs = launch("reducer-die", 2);
    let t = text(&outs[0]);
    let line = t.lines().find_map(|l| l.split_once("FAILED after ")).unwrap_or_else(|| panic!("{t}")).1;
    let secs: f64 = line.split(' ').next().unwrap().parse().unwrap();
    assert!(secs < 10.0, "the 3 s timeout took {secs} s: {line}");
    assert!(
        line.contains("rank 0 of 2 (gloo): averaging the gradients during the backward pass failed"),
        "{line}"
    );
    println!("{line}");
}

#[test]
fn an_nccl_group_is_bound_to_the_ranks_gpu_and_waits_without_a_host_timeout() {
    // LOCAL_RANK 3 of a node: the rank's device, and the GPU its NCCL group is bound to before
    // the first collective (unbound, NCCL would guess rank % local GPUs: rank 11's 11 % 8 here).
    let env = |k: &str| {
        [
            ("RANK", "11"),
            ("WORLD_SIZE", "16"),
            ("LOCAL_RANK", "3"),
            ("MASTER_ADDR", "n0"),
            ("MASTER_PORT", "29500"),
        ]
        .iter()
        .find(|(key, _)| *key == k)
        .map(|(_, v)| v.to_string())
    };
    let resnet_repro::dist::Launch::Rank(rank) = resnet_repro::dist::Launch::from_vars(env).unwrap() else {
        panic!("a rank")
    };
    assert_eq!(rank.local_rank, 3);
    let device = tch::Device::Cuda(rank.local_rank);
    assert_eq!(Backend::for_device(device), Backend::Nccl);
    assert_eq!(Backend::Nccl.bound_gpu(device).unwrap(), Some(3));
    assert_eq!(Backend::Gloo.bound_gpu(tch::Device::Cpu).unwrap(), None);
    assert!(Backend::Nccl.bound_gpu(tch::Device::Cpu).is_err());
    // Waiting: Gloo's collectives time out on the host; NCCL's wait has no host timeout (one would
    // busy-poll and never fire), its watchdog enforces the group's timeout.
    let t = Duration::from_secs(600);
    assert_eq!(Backend::Gloo.wait_timeout(t), Some(t));
    assert_eq!(Backend::Nccl.wait_timeout(t), None);
}

#[test]
fn nccl_without_a_gpu_or_without_its_headers_is_an_error_naming_the_rank() {
    if tch::Cuda::is_available() {
        return; // a GPU machine: NCCL may well work here
    }
    let rv = Rendezvous { host: "127.0.0.1".into(), port: free_port(), host_it: true, prefix: "/x/".into() };
    let err = match ProcessGroup::new(&rv, 0, 1, tch::Device::Cuda(0), Duration::from_secs(5)) {
        Ok(_) => panic!("an NCCL group without a GPU"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("rank 0 of 1: creating the nccl process group"), "{err}");
    if !Backend::Nccl.compiled_in() {
        assert!(err.contains("this build has no NCCL"), "{err}");
    }
    println!("{err}");
}

/// ResNet-8 on real Fashion-MNIST (1000 test images), 200 iterations, a checkpoint every 50.
const TORCHRUN_EXPERIMENT: &str = "name = \"tr\"\npreset = \"quick\"\nseeds = [0]\n[data]\n\
    dataset = \"fashion-mnist\"\ntest_subset = 1000\n[train]\nbatch_size = 128\nlr = 0.1\n\
    milestones = []\niterations = 200\nlog_every = 10\neval_every = 100\ncheckpoint_every = 50\n\
    [[runs]]\ndepth = 8\nresidual = true\n";

/// `torchrun --nproc-per-node 2` running cifar_depth_sweep on the experiment above in `dir`; with
/// `kill_at`, rank 1 is killed (SIGKILL) once rank 0 logs that iteration. Returns (success, log).
fn torchrun_sweep(dir: &Path, kill_at: Option<u64>, extra: &[&str]) -> (bool, String) {
    use std::io::{BufRead, BufReader};
    std::fs::write(dir.join("exp.toml"), TORCHRUN_EXPERIMENT).unwrap();
    let mut child = Command::new("torchrun")
        .args(["--no-python", "--nproc-per-node", "2", "--max-restarts", "1", "--master-port"])
        .arg(free_port().to_string())
        .arg(env!("CARGO_BIN_EXE_cifar_depth_sweep"))
        .arg("--config")
        .arg(dir.join("exp.toml"))
        .arg("--out")
        .arg(dir.join("runs"))
        .arg("--plots")
        .arg(dir.join("plots"))
        .args(["--device", "cpu", "--no-download", "--data-dir", "/usr/share/datasets/fashion-mnist"])
        .args(extra)
        .env("RESNET_REPRO_TEST_JOB", dir) // finds this job's workers below
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("torchrun (scripts/with-torch puts the torch install's on PATH)");
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if kill_at.is_some_and(|k| line.contains(&format!(": it {k}/200 "))) && !log.contains("KILLED") {
            let victim = worker_pid(dir, 1).expect("rank 1's process");
            unsafe { libc::kill(victim, libc::SIGKILL) };
            log.push_str("KILLED rank 1\n");
        }
        log.push_str(&line);
        log.push('\n');
    }
    (child.wait().unwrap().success(), log)
}

/// The pid of rank `rank` of the job started with RESNET_REPRO_TEST_JOB=`job`.
fn worker_pid(job: &Path, rank: usize) -> Option<i32> {
    let want = [format!("RESNET_REPRO_TEST_JOB={}", job.display()), format!("RANK={rank}")];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        let exe = std::fs::read_link(e.path().join("exe")).ok()?;
        (exe.ends_with("cifar_depth_sweep") && want.iter().all(|w| vars.contains(&w.as_bytes())))
            .then_some(pid)
    })
}

#[test]
fn under_torchrun_a_killed_rank_restarts_the_job_from_its_checkpoint_and_it_ends_as_uninterrupted() {
    if !gloo() {
        return;
    }
    if !common::fashion_mnist_installed() {
        return;
    }
    let [whole, killed] = [(); 2].map(|_| tempfile::tempdir().unwrap());
    // Averaging after the backward pass (sum, then halve) or during it (c10d's reducer: halve,
    // then sum) gives the same bits at 2 ranks: the uninterrupted job uses the one, the killed
    // job the other.
    let (ok, log) = torchrun_sweep(whole.path(), None, &["--grad-sync", "after"]);
    assert!(ok && log.contains("data-parallel: 2 ranks over gloo"), "{log}");
    assert!(log.contains("gradients averaged after the backward pass"), "{log}");
    let (ok, log) = torchrun_sweep(killed.path(), Some(80), &[]);
    assert!(log.contains("gradients averaged during the backward pass"), "{log}");
    assert!(ok, "{log}");
    assert!(log.contains("KILLED rank 1") && log.contains("resuming from"), "{log}");
    assert!(log.contains("(iteration 50)"), "resumed from the checkpoint at 50: {log}");
    let run = |d: &Path| {
        let runs = resnet_repro::experiment::Store::new(d.join("runs")).runs().unwrap();
        runs.into_iter().next().unwrap().dir
    };
    let (a, b) = (run(whole.path()), run(killed.path()));
    assert_eq!(largest_difference(&a, &b), 0.0, "the restarted job's final weights");
    let (ma, mb) = (a.metrics().unwrap(), b.metrics().unwrap());
    assert_eq!(ma.len(), 20);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(
            (x.iteration, x.train_loss, x.train_error, x.test_error),
            (y.iteration, y.train_loss, y.train_error, y.test_error)
        );
    }
    assert!(a.final_record().unwrap().is_some_and(|f| f.replicas == 2));
}
