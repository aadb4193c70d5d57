//! c10d through the shim, for real: two processes (this test binary run again, one per rank) meet
//! through a TCPStore and talk over Gloo. Checks the collectives' results, and that a peer that
//! hangs or dies makes the others fail within the timeout with a message naming the rank and the
//! operation instead of hanging the job.

use resnet_repro::dist::{Launch, Replicas};
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::shim::dist::{Backend, ProcessGroup, Rendezvous};
use resnet_repro::train::Trainer;
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
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", "child", "--nocapture", "--test-threads=1"])
                .env(CHILD, format!("{scenario} {rank} {world} {port}"))
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
    let rv = Rendezvous { host: "127.0.0.1".into(), port, host_it: rank == 0, prefix: "/test/".into() };
    let timeout = Duration::from_secs(if scenario == "collectives" { 60 } else { 3 });
    let pg = ProcessGroup::new(Backend::Gloo, &rv, rank, world, timeout).unwrap();
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

/// Rank `rank` of the replicas test: a ResNet-8 built from seed `rank` (the ranks start different),
/// met through torchrun's variables.
fn replicas(rank: usize, world: usize, port: u16) {
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
    let mut dp = Replicas::connect(&env, tch::Device::Cpu, Duration::from_secs(60)).unwrap();
    dp.bucket_bytes = 4096; // many buckets in flight, and tensors larger than one
    let net = NetSpec::Cifar(CifarNet { in_channels: 1, ..CifarNet::resnet(8) });
    let hyper = (0.9, 1e-4);
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
    grads_of(&mut t, rank);
    dp.average_grads(&t.opt.params).unwrap();
    for (p, e) in t.opt.params.iter().zip(&eg) {
        assert!(p.grad().allclose(&(e * scale), 1e-5, 1e-6, false), "rank {rank}: gradient not the mean");
    }
    dp.average_buffers(&t.vs).unwrap();
    for (b, e) in buffers(&t.vs).iter().zip(&eb) {
        assert!(b.allclose(&(e * scale), 1e-5, 1e-7, false), "rank {rank}: running statistic not the mean");
    }
    assert_eq!(dp.sum(&[rank as f64, 1.5]).unwrap(), [(world * (world - 1) / 2) as f64, 1.5 * world as f64]);
    println!("OK rank {rank}");
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

/// The floating-point buffers (BN's running statistics), in name order.
fn buffers(vs: &tch::nn::VarStore) -> Vec<Tensor> {
    let mut v: Vec<(String, Tensor)> =
        vs.variables().into_iter().filter(|(_, t)| !t.requires_grad() && t.is_floating_point()).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.into_iter().map(|(_, t)| t.copy()).collect()
}

fn add(a: &[Tensor], b: &[Tensor]) -> Vec<Tensor> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

#[test]
fn replicas_start_from_rank_0_and_average_gradients_and_running_statistics() {
    if !gloo() {
        return;
    }
    for (rank, out) in launch("replicas", 2).iter().enumerate() {
        assert!(out.status.success() && text(out).contains(&format!("OK rank {rank}")), "{}", text(out));
    }
}

fn gloo() -> bool {
    if !Backend::Gloo.compiled_in() {
        eprintln!("SKIPPED: this build has no Gloo (apt-get install libgloo-dev; .ci/run installs it)");
        return false;
    }
    true
}

#[test]
fn two_ranks_sum_broadcast_and_meet_over_gloo() {
    if std::env::var_os("RESNET_REPRO_REQUIRE_GLOO").is_some() {
        assert!(Backend::Gloo.compiled_in(), "this build has no Gloo: .ci/run installs libgloo-dev first");
    }
    if !gloo() {
        return;
    }
    for (rank, out) in launch("collectives", 2).iter().enumerate() {
        assert!(out.status.success() && text(out).contains(&format!("OK rank {rank}")), "{}", text(out));
    }
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
fn a_backend_missing_from_the_build_says_what_to_install() {
    if Backend::Nccl.compiled_in() {
        return;
    }
    let rv = Rendezvous { host: "127.0.0.1".into(), port: free_port(), host_it: true, prefix: "/x/".into() };
    let err = match ProcessGroup::new(Backend::Nccl, &rv, 0, 1, Duration::from_secs(5)) {
        Ok(_) => panic!("NCCL is not compiled in, yet a group was made"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("rank 0 of 1") && err.contains("this build has no NCCL"), "{err}");
}
