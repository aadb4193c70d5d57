//! The whole CIFAR training loop (data, augmentation, step) in images/s: ours next to a plain
//! PyTorch eager script with torchvision transforms and a DataLoader (bench/pytorch_train_loop.py),
//! same torch install and thread count, run back to back.

use anyhow::Result;
use clap::Parser;
use resnet_repro::bench::{
    BenchArgs, BenchEnv, COMMIT, append_csv_row, synthetic_cifar, time_stepper, time_steps, utc_now,
};
use resnet_repro::data::{Prepared, TensorOptions};
use resnet_repro::env::device_name;
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::shim::contiguous;
use resnet_repro::train::{Layout, Precision, SgdSettings, Stepper, TensorFeed, TrainData, Trainer};
use serde::Serialize;
use std::path::PathBuf;

/// Images/s of the CIFAR training loop on synthetic uint8 32x32 images: batch 128, pad-crop-flip
/// augmentation, ResNet-20/56/110 step (SGD momentum). Ours draws batches from the device-resident
/// dataset in the training's default layout, and on a GPU replays its step captured as a CUDA graph
/// as training does (the warm-up covers the capture); PyTorch runs torchvision transforms in a
/// DataLoader, with 0 and with 2 worker processes (the better is kept). Appends to
/// runs/bench/train_loop.csv.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    bench: BenchArgs,
    /// Synthetic training images.
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Measurements of each side, alternated; the best of each is kept.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// DataLoader worker counts tried for PyTorch (the best is kept).
    #[arg(long, value_delimiter = ',', default_value = "0,2")]
    workers: Vec<usize>,
    /// Both sides' forward pass: fp32, or bf16 autocast.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// On a GPU, our steps op by op instead of a captured CUDA graph (training's --no-cuda-graph).
    #[arg(long)]
    no_cuda_graph: bool,
    #[arg(long, default_value = "runs/bench/train_loop.csv")]
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
    layout: String,
    precision: Precision,
    /// Whether our steps replayed a CUDA graph.
    cuda_graph: bool,
    ours_images_per_s: f64,
    /// Our bare step (one fixed batch, eager) in the same process, and loop / step.
    ours_step_images_per_s: f64,
    loop_vs_step: f64,
    pytorch_images_per_s: f64,
    pytorch_workers: usize,
    ratio: f64,
}

/// What one measurement of ours gives.
struct Ours {
    /// The loop's images/s.
    loop_rate: f64,
    /// The same trainer's eager step alone on one fixed batch (bench_train_step's), images/s.
    step_rate: f64,
    layout: String,
    captured: bool,
}

/// Our loop, then the bare step of the same trainer: their ratio is what the loop adds or saves.
fn ours(args: &Args, env: &BenchEnv, depth: usize, data: &Prepared) -> Result<Ours> {
    let net = NetSpec::Cifar(CifarNet::resnet(depth));
    let format = Layout::Auto.resolve(env.device);
    let mut trainer = Trainer::with_format(&net, SgdSettings::PAPER, 0, env.device, format)?;
    trainer.precision = args.precision;
    let mut batches = TensorFeed::new(data, 0, args.bench.batch, &TensorOptions::default());
    let layout = trainer.format.to_string();
    batches.start(0, &[])?;
    let (mut stepper, why_not) = Stepper::for_run(!args.no_cuda_graph, &trainer, &mut batches);
    if let Some(why) = why_not.filter(|_| env.device.is_cuda()) {
        eprintln!("resnet{depth}: not captured: {why}");
    }
    let counts = (args.bench.warmup, args.bench.steps);
    let secs = time_stepper(env.device, counts, &mut stepper, &mut trainer, &mut batches)?;
    let (x, y) = batches.batch(0)?;
    let x = contiguous(&x, trainer.format)?;
    let mut result = Ok(());
    let step_secs = time_steps(env.device, args.bench.warmup, args.bench.steps, || {
        if result.is_ok() {
            result = trainer.step(&x, &y, 0.1).map(|_| ());
        }
    });
    result?;
    let b = args.bench.batch as f64;
    Ok(Ours { loop_rate: b / secs, step_rate: b / step_secs, layout, captured: stepper.is_captured() })
}

fn pytorch(args: &Args, env: &BenchEnv, depth: usize, workers: usize) -> Result<f64> {
    let mut a = args.bench.python_args(env);
    a.extend([
        format!("--depth={depth}"),
        format!("--images={}", args.images),
        format!("--workers={workers}"),
    ]);
    if args.precision == Precision::Bf16 {
        a.push("--bf16".into());
    }
    env.python_images_per_s("bench/pytorch_train_loop.py", &a)
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let env = args.bench.setup()?;
    let data = Prepared::new(&synthetic_cifar(args.images), 0, env.device)?;
    println!(
        "training loop, batch {}, {} synthetic images; {}; images/s",
        args.bench.batch,
        args.images,
        env.describe()
    );
    println!("{:<10} {:>30} {:>24} {:>8} {:>14}", "model", "ours", "PyTorch", "ratio", "ours loop/step");
    for &depth in &args.bench.depths {
        let (mut best_ours, mut best_theirs, mut best_workers, mut layout) = (0f64, 0f64, 0, String::new());
        let (mut captured, mut best_step) = (false, 0f64);
        for _ in 0..args.repeats.max(1) {
            let o = ours(&args, &env, depth, &data)?;
            best_ours = best_ours.max(o.loop_rate);
            best_step = best_step.max(o.step_rate);
            (layout, captured) = (o.layout, o.captured);
            for &w in &args.workers {
                let v = pytorch(&args, &env, depth, w)?;
                if v > best_theirs {
                    (best_theirs, best_workers) = (v, w);
                }
            }
        }
        let row = Row {
            date: utc_now(),
            commit: COMMIT.to_string(),
            device: device_name(env.device),
            threads: tch::get_num_threads(),
            torch: env.torch.clone(),
            model: format!("resnet{depth}"),
            batch: args.bench.batch,
            steps: args.bench.steps,
            layout: layout.clone(),
            precision: args.precision,
            cuda_graph: captured,
            ours_images_per_s: best_ours,
            ours_step_images_per_s: best_step,
            loop_vs_step: best_ours / best_step,
            pytorch_images_per_s: best_theirs,
            pytorch_workers: best_workers,
            ratio: best_ours / best_theirs,
        };
        println!(
            "{:<10} {:>30} {:>24} {:>8.3} {:>14.3}",
            row.model,
            format!("{best_ours:.1} ({layout}{})", if captured { ", graph" } else { "" }),
            format!("{best_theirs:.1} ({best_workers} workers)"),
            row.ratio,
            row.loop_vs_step
        );
        append_csv_row(&args.csv, &row)?;
    }
    println!("appended to {}", args.csv.display());
    Ok(())
}
