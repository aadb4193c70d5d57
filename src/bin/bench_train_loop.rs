//! The whole CIFAR training loop (data, augmentation, step) in images/s: ours next to a plain
//! PyTorch eager script with torchvision transforms and a DataLoader (bench/pytorch_train_loop.py),
//! same torch install and thread count, run back to back.

use anyhow::Result;
use clap::Parser;
use resnet_repro::bench::{
    append_csv_row, default_python, git_commit, repo_file, run_python_json, time_steps, utc_now,
};
use resnet_repro::config::{Layout, Preset, RunConfig, TrainConfig};
use resnet_repro::data::{Dataset, DatasetName, ImageSet, Prepared};
use resnet_repro::env::{TorchInfo, device_name, parse_device};
use resnet_repro::models::CifarNet;
use resnet_repro::train::Trainer;
use serde::Serialize;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// Images/s of the CIFAR training loop on synthetic uint8 32x32 images: batch 128, pad-crop-flip
/// augmentation, ResNet-20/56/110 step (SGD momentum). Ours draws batches from the device-resident
/// dataset in the training's default layout; PyTorch runs torchvision transforms in a DataLoader,
/// with 0 and with 2 worker processes (the better is kept). Appends to runs/bench/train_loop.csv.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[arg(long, value_delimiter = ',', default_value = "20,56,110")]
    depths: Vec<usize>,
    /// Synthetic training images.
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Measurements of each side, alternated; the best of each is kept.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// DataLoader worker counts tried for PyTorch (the best is kept).
    #[arg(long, value_delimiter = ',', default_value = "0,2")]
    workers: Vec<usize>,
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU threads for both sides (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    #[arg(long)]
    python: Option<String>,
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
    ours_images_per_s: f64,
    pytorch_images_per_s: f64,
    pytorch_workers: usize,
    ratio: f64,
}

fn synthetic(n: usize) -> Dataset {
    tch::manual_seed(0);
    let images = Tensor::randint(256, [n as i64, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let labels = Tensor::randint(10, [n as i64], (Kind::Int64, Device::Cpu));
    let test = ImageSet { images: images.narrow(0, 0, 1), labels: labels.narrow(0, 0, 1) };
    Dataset {
        name: DatasetName::Cifar10,
        train: ImageSet { images, labels },
        test,
        location: "synthetic".into(),
    }
}

fn ours(args: &Args, depth: usize, data: &Prepared, device: Device) -> Result<(f64, String)> {
    let cfg = RunConfig {
        experiment: "bench".into(),
        preset: Preset::Quick,
        dataset: DatasetName::Cifar10,
        seed: 0,
        net: CifarNet::resnet(depth),
        train: TrainConfig { batch_size: args.batch, layout: Layout::Auto, ..TrainConfig::default() },
    };
    let mut trainer = Trainer::new(&cfg, data, device)?;
    let layout = trainer.format.to_string();
    let mut it = 0u64;
    let mut result = Ok(());
    let secs = time_steps(device, args.warmup, args.steps, || {
        if result.is_ok() {
            result = trainer.step(it, 0.1).map(|_| ());
            it += 1;
        }
    });
    result?;
    Ok((args.batch as f64 / secs, layout))
}

fn pytorch(args: &Args, depth: usize, workers: usize, device: &str, python: &str) -> Result<f64> {
    let script = repo_file("bench/pytorch_train_loop.py");
    let a = [
        format!("--depth={depth}"),
        format!("--images={}", args.images),
        format!("--batch={}", args.batch),
        format!("--warmup={}", args.warmup),
        format!("--steps={}", args.steps),
        format!("--workers={workers}"),
        format!("--device={device}"),
        format!("--threads={}", tch::get_num_threads()),
    ];
    let v = run_python_json(python, &script, &a)?;
    v["images_per_s"].as_f64().ok_or_else(|| anyhow::anyhow!("{}: no images_per_s in {v}", script.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = parse_device(&args.device)?;
    let python = args.python.clone().unwrap_or_else(default_python);
    let torch = TorchInfo::current().version.unwrap_or_else(|| "unknown".into());
    let data = Prepared::new(&synthetic(args.images), 0, device)?;
    println!(
        "training loop, batch {}, {} synthetic images; device {}, {} threads, torch {torch}; images/s",
        args.batch,
        args.images,
        device_name(device),
        tch::get_num_threads()
    );
    println!("{:<10} {:>24} {:>24} {:>8}", "model", "ours", "PyTorch", "ratio");
    for &depth in &args.depths {
        let (mut best_ours, mut best_theirs, mut best_workers, mut layout) = (0f64, 0f64, 0, String::new());
        for _ in 0..args.repeats.max(1) {
            let (v, l) = ours(&args, depth, &data, device)?;
            best_ours = best_ours.max(v);
            layout = l;
            for &w in &args.workers {
                let v = pytorch(&args, depth, w, &device_name(device), &python)?;
                if v > best_theirs {
                    (best_theirs, best_workers) = (v, w);
                }
            }
        }
        let row = Row {
            date: utc_now(),
            commit: git_commit().unwrap_or_default(),
            device: device_name(device),
            threads: tch::get_num_threads(),
            torch: torch.clone(),
            model: format!("resnet{depth}"),
            batch: args.batch,
            steps: args.steps,
            layout: layout.clone(),
            ours_images_per_s: best_ours,
            pytorch_images_per_s: best_theirs,
            pytorch_workers: best_workers,
            ratio: best_ours / best_theirs,
        };
        println!(
            "{:<10} {:>24} {:>24} {:>8.3}",
            row.model,
            format!("{best_ours:.1} ({layout})"),
            format!("{best_theirs:.1} ({best_workers} workers)"),
            row.ratio
        );
        append_csv_row(&args.csv, &row)?;
    }
    println!("appended to {}", args.csv.display());
    Ok(())
}
