//! Train-step throughput of CIFAR ResNets: ours next to the same network in plain PyTorch eager
//! (bench/pytorch_train_step.py), same torch install and thread count, run back to back.

use anyhow::Result;
use clap::Parser;
use resnet_repro::bench::{BenchArgs, BenchEnv, append_csv_row, git_commit, time_steps, utc_now};
use resnet_repro::env::device_name;
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::shim::{MemoryFormat, contiguous};
use resnet_repro::train::Trainer;
use serde::Serialize;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// Images/s of one SGD step (forward, loss, backward, update; batch 128, fp32, momentum 0.9, weight
/// decay 1e-4) on synthetic data, for CIFAR ResNet-20/56/110: ours in NCHW and in channels_last (NHWC)
/// layout, and plain PyTorch eager in its default NCHW, alternated `--repeats` times (best of each
/// kept). Prints the ratios and appends them to runs/bench/train_step.csv.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    bench: BenchArgs,
    /// Measurements of each side, alternated (ours, PyTorch, ours, ...); the best of each is kept.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Let cuDNN benchmark its kernels (both sides; CUDA only).
    #[arg(long)]
    cudnn_benchmark: bool,
    #[arg(long, default_value = "runs/bench/train_step.csv")]
    csv: PathBuf,
}

#[derive(Serialize)]
struct Row {
    date: String,
    commit: String,
    device: String,
    threads: i32,
    torch: String,
    model: String,
    batch: usize,
    steps: usize,
    ours_contiguous_images_per_s: f64,
    ours_channels_last_images_per_s: f64,
    pytorch_images_per_s: f64,
    ratio_contiguous: f64,
    ratio_channels_last: f64,
}

fn ours(args: &Args, env: &BenchEnv, depth: usize, format: MemoryFormat) -> Result<f64> {
    let (b, device) = (args.bench.batch as i64, env.device);
    let mut trainer =
        Trainer::with_format(&NetSpec::Cifar(CifarNet::resnet(depth)), (0.9, 1e-4), 0, device, format)?;
    let x = contiguous(&Tensor::randn([b, 3, 32, 32], (Kind::Float, device)), format)?;
    let y = Tensor::randint(10, [b], (Kind::Int64, device));
    // The training loop's own step (forward, loss, backward, update, and the misclassified count
    // it keeps on the device).
    let mut step = || -> Result<()> { trainer.step(&x, &y, 0.1).map(|_| ()) };
    let mut result = Ok(());
    let secs = time_steps(device, args.bench.warmup, args.bench.steps, || {
        if result.is_ok() {
            result = step();
        }
    });
    result?;
    Ok(b as f64 / secs)
}

fn pytorch(args: &Args, env: &BenchEnv, depth: usize) -> Result<f64> {
    let mut a = args.bench.python_args(env);
    a.push(format!("--depth={depth}"));
    if args.cudnn_benchmark {
        a.push("--cudnn-benchmark".into());
    }
    env.python_images_per_s("bench/pytorch_train_step.py", &a)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let env = args.bench.setup()?;
    if args.cudnn_benchmark && env.device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    println!("train step, batch {}, fp32, SGD momentum; {}; images/s", args.bench.batch, env.describe());
    println!("{:<10} {:>10} {:>10} {:>10} {:>8} {:>8}", "", "ours", "ours", "PyTorch", "ratio", "ratio");
    println!("{:<10} {:>10} {:>10} {:>10} {:>8} {:>8}", "model", "NCHW", "NHWC", "NCHW", "NCHW", "NHWC");
    for &depth in &args.bench.depths {
        let (mut nchw, mut nhwc, mut theirs) = (0f64, 0f64, 0f64);
        for _ in 0..args.repeats.max(1) {
            nchw = nchw.max(ours(&args, &env, depth, MemoryFormat::Contiguous)?);
            theirs = theirs.max(pytorch(&args, &env, depth)?);
            nhwc = nhwc.max(ours(&args, &env, depth, MemoryFormat::ChannelsLast)?);
        }
        let row = Row {
            date: utc_now(),
            commit: git_commit().unwrap_or_default(),
            device: device_name(env.device),
            threads: tch::get_num_threads(),
            torch: env.torch.clone(),
            model: format!("resnet{depth}"),
            batch: args.bench.batch,
            steps: args.bench.steps,
            ours_contiguous_images_per_s: nchw,
            ours_channels_last_images_per_s: nhwc,
            pytorch_images_per_s: theirs,
            ratio_contiguous: nchw / theirs,
            ratio_channels_last: nhwc / theirs,
        };
        println!(
            "{:<10} {:>10.1} {:>10.1} {:>10.1} {:>8.3} {:>8.3}",
            row.model, nchw, nhwc, theirs, row.ratio_contiguous, row.ratio_channels_last
        );
        append_csv_row(&args.csv, &row)?;
    }
    println!("appended to {}", args.csv.display());
    Ok(())
}
