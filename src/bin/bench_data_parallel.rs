//! Data-parallel training's cost: the CIFAR training loop (batch, augmentation, step) as `world`
//! replicas (processes started here as torchrun would, one share of the cores each, Gloo on the
//! CPU, NCCL on a GPU) against one process with all the cores, back to back, in images/s; the
//! replicas averaging their gradients during the backward pass (c10d's reducer, the default) and
//! after it (with their time in averaging per step).

use anyhow::{Context, Result, ensure};
use clap::Parser;
use resnet_repro::bench::{
    BenchArgs, BenchEnv, COMMIT, append_csv_row, synthetic_cifar, time_steps, utc_now,
};
use resnet_repro::data::{Prepared, TensorOptions};
use resnet_repro::dist::{GradSync, Launch, Replicas};
use resnet_repro::env::device_name;
use resnet_repro::models::{CifarNet, ImageNetNet, NetSpec, Shortcut};
use resnet_repro::train::{Layout, Precision, SgdSettings, TensorFeed, TrainData, Trainer};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Images/s of ResNet training on synthetic 32x32 images, batch 128 (global), as `--world`
/// replicas against one process. On a CPU the replicas split the cores (2 x 1 thread against 1 x 2
/// threads here); on a GPU, `--world 1` measures the distributed path's overhead (NCCL, one rank)
/// against none. Appends to runs/bench/data_parallel.csv.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    bench: BenchArgs,
    /// Replicas (processes).
    #[arg(long, default_value_t = 2)]
    world: usize,
    /// Synthetic training images.
    #[arg(long, default_value_t = 4096)]
    images: usize,
    /// Measure this ImageNet ResNet (option B; 50 for ResNet-50) instead of the CIFAR depths: its
    /// step on one synthetic batch of `--side`-pixel images, repeated (the loader is
    /// bench_loader's).
    #[arg(long)]
    imagenet: Option<usize>,
    /// The forward pass: fp32, or bf16 autocast (both the replicas and the one process).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// ImageNet images' side.
    #[arg(long, default_value_t = 224)]
    side: i64,
    #[arg(long, default_value = "runs/bench/data_parallel.csv")]
    csv: PathBuf,
    /// Internal: this process is one replica of the measurement (set by the parent).
    #[arg(long, hide = true)]
    replica: bool,
    /// Internal: the replica averages gradients after the backward pass, not during it.
    #[arg(long, hide = true)]
    after_backward: bool,
}

/// What a replica measured (rank 0's, printed as JSON).
#[derive(Serialize, Deserialize)]
struct Measured {
    images_per_s: f64,
    averaging_ms_per_step: f64,
    threads: i32,
}

#[derive(Serialize)]
struct Row {
    date: String,
    commit: String,
    device: String,
    torch: String,
    model: String,
    batch: usize,
    steps: usize,
    world: usize,
    precision: Precision,
    threads_per_replica: i32,
    replicas_images_per_s: f64,
    after_backward_images_per_s: f64,
    averaging_ms_per_step: f64,
    single_threads: i32,
    single_images_per_s: f64,
    ratio: f64,
    during_over_after: f64,
}

fn synthetic(n: usize, device: Device) -> Result<Prepared> {
    Prepared::new(&synthetic_cifar(n), 0, device)
}

/// The network measured: a CIFAR ResNet, or an ImageNet one (`--imagenet`).
fn model(args: &Args, depth: usize) -> NetSpec {
    match args.imagenet {
        Some(d) => NetSpec::ImageNet(ImageNetNet::resnet(d, Shortcut::B)),
        None => NetSpec::Cifar(CifarNet::resnet(depth)),
    }
}

/// Steps of the model (as a replica of `dp` if given): (images/s of the global batch, ms of
/// averaging per step).
fn measure(args: &Args, env: &BenchEnv, depth: usize, dp: Option<Arc<Replicas>>) -> Result<(f64, f64)> {
    let net = model(args, depth);
    let mut trainer =
        Trainer::with_format(&net, SgdSettings::PAPER, 0, env.device, Layout::Auto.resolve(env.device))?;
    trainer.precision = args.precision;
    if let Some(dp) = &dp {
        dp.broadcast_vars(&trainer.vs)?;
        trainer.join(dp.clone())?;
    }
    let data = match args.imagenet {
        Some(_) => None,
        None => Some(synthetic(args.images, env.device)?),
    };
    let mut next = batches(args, env.device, data.as_ref(), dp.clone())?;
    let (mut it, mut result) = (0u64, Ok(()));
    let secs = time_steps(env.device, args.bench.warmup, args.bench.steps, || {
        if result.is_ok() {
            result = next(it).and_then(|(x, y)| trainer.step(&x, &y, 0.1).map(|_| ()));
            it += 1;
        }
    });
    result?;
    let averaging =
        dp.map_or(0.0, |dp| dp.averaging_seconds()) / (args.bench.warmup + args.bench.steps) as f64;
    Ok((args.bench.batch as f64 / secs, averaging * 1e3))
}

type Batches<'a> = Box<dyn FnMut(u64) -> Result<(Tensor, Tensor)> + 'a>;

/// This replica's batch of each iteration: the CIFAR training loop's (from `data`, augmented),
/// or for an ImageNet net one synthetic batch of its share, repeated.
fn batches<'a>(
    args: &Args,
    device: Device,
    data: Option<&'a Prepared>,
    dp: Option<Arc<Replicas>>,
) -> Result<Batches<'a>> {
    let world = dp.as_ref().map_or(1, |dp| dp.world());
    let Some(data) = data else {
        let b = resnet_repro::dist::check_batch(args.bench.batch, world)? as i64;
        let x = Tensor::randn([b, 3, args.side, args.side], (Kind::Float, device));
        let y = Tensor::randint(1000, [b], (Kind::Int64, device));
        return Ok(Box::new(move |_| Ok((x.shallow_clone(), y.shallow_clone()))));
    };
    let mut feed = TensorFeed::new(data, 0, args.bench.batch, &TensorOptions::default());
    if let Some(dp) = dp {
        feed = feed.for_replica(dp)?;
    }
    Ok(Box::new(move |it| feed.batch(it)))
}

/// Runs `args.world` replicas of this binary and returns rank 0's measurement.
fn replicas(args: &Args, depth: usize, cores: usize, after_backward: bool) -> Result<Measured> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let exe = std::env::current_exe()?;
    let threads = (cores / args.world).max(1).to_string();
    let children = (0..args.world)
        .map(|rank| {
            std::process::Command::new(&exe)
                .args(["--replica", "--depths", &depth.to_string(), "--threads", &threads])
                .args(after_backward.then_some("--after-backward"))
                .args(["--batch", &args.bench.batch.to_string(), "--device", &device_name(args.bench.device)])
                .args(["--warmup", &args.bench.warmup.to_string(), "--steps", &args.bench.steps.to_string()])
                .args(["--images", &args.images.to_string(), "--side", &args.side.to_string()])
                .args(["--precision", &args.precision.to_string()])
                .args(args.imagenet.iter().flat_map(|d| ["--imagenet".to_string(), d.to_string()]))
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", args.world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("starting a replica")
        })
        .collect::<Result<Vec<_>>>()?;
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output()).collect::<std::io::Result<_>>()?;
    ensure!(outs.iter().all(|o| o.status.success()), "a replica failed (its error is above)");
    let line = String::from_utf8_lossy(&outs[0].stdout).lines().last().unwrap_or_default().to_string();
    serde_json::from_str(&line).with_context(|| format!("rank 0 printed {line:?}"))
}

/// One replica: joins the others (this process's environment) and prints its measurement.
fn replica(args: &Args) -> Result<()> {
    let env = args.bench.setup()?;
    let Launch::Rank(rank) = Launch::from_env()? else { anyhow::bail!("--replica without RANK") };
    let device = rank.device(env.device)?;
    let mut dp = Replicas::connect(&rank, device, std::time::Duration::from_secs(120))?;
    if args.after_backward {
        dp.grad_sync = GradSync::AfterBackward;
    }
    let dp = Arc::new(dp);
    let env = BenchEnv { device, ..env };
    let (images_per_s, averaging_ms_per_step) = measure(args, &env, args.bench.depths[0], Some(dp))?;
    let m = Measured { images_per_s, averaging_ms_per_step, threads: tch::get_num_threads() };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    if args.replica {
        return replica(&args);
    }
    let env = args.bench.setup()?;
    let cores = tch::get_num_threads().max(1) as usize;
    println!(
        "data-parallel training, global batch {}, {} replicas against 1 process; {}; images/s",
        args.bench.batch,
        args.world,
        env.describe()
    );
    println!(
        "{:<10} {:>16} {:>30} {:>22} {:>8} {:>8}",
        "model", "replicas", "averaging after (ms/step)", "1 process", "ratio", "during/after"
    );
    let depths = if args.imagenet.is_some() { vec![0] } else { args.bench.depths.clone() };
    for depth in depths {
        let during = replicas(&args, depth, cores, false)?;
        let after = replicas(&args, depth, cores, true)?;
        let (single, _) = measure(&args, &env, depth, None)?;
        let row = Row {
            date: utc_now(),
            commit: COMMIT.to_string(),
            device: device_name(env.device),
            torch: env.torch.clone(),
            model: match args.imagenet {
                Some(d) => format!("resnet{d}-imagenet"),
                None => format!("resnet{depth}"),
            },
            batch: args.bench.batch,
            steps: args.bench.steps,
            world: args.world,
            precision: args.precision,
            threads_per_replica: during.threads,
            replicas_images_per_s: during.images_per_s,
            after_backward_images_per_s: after.images_per_s,
            averaging_ms_per_step: after.averaging_ms_per_step,
            single_threads: tch::get_num_threads(),
            single_images_per_s: single,
            ratio: during.images_per_s / single,
            during_over_after: during.images_per_s / after.images_per_s,
        };
        println!(
            "{:<10} {:>16.1} {:>30} {:>22} {:>8.3} {:>8.3}",
            row.model,
            during.images_per_s,
            format!("{:.1} ({:.1} ms)", after.images_per_s, after.averaging_ms_per_step),
            format!("{single:.1} ({} threads)", row.single_threads),
            row.ratio,
            row.during_over_after
        );
        append_csv_row(&args.csv, &row)?;
    }
    println!("appended to {}", args.csv.display());
    Ok(())
}
