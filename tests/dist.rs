//! c10d through the shim, for real: two processes (this test binary run again, one per rank) meet
//! through a TCPStore and talk over Gloo. Checks the collectives' results, and that a peer that
//! hangs or dies makes the others fail within the timeout with a message naming the rank and the
//! operation instead of hanging the job.

use resnet_repro::shim::dist::{Backend, ProcessGroup, Rendezvous};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
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
