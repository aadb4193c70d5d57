//! Train-step throughput of CIFAR ResNets: ours next to the same network in plain PyTorch eager
//! (bench/pytorch_train_step.py), same torch install and thread count, run back to back.

use anyhow::Result;
use clap::Parser;
use resnet_repro::bench::{
    append_csv_row, default_python, git_commit, repo_file, run_python_json, time_steps, utc_now,
};
use resnet_repro::env::{TorchInfo, device_name, parse_device};
use resnet_repro::models::CifarNet;
use resnet_repro::optim::Sgd;
use resnet_repro::shim::{MemoryFormat, contiguous, set_memory_format};
use serde::Serialize;
use std::path::PathBuf;
use tch::{Kind, Reduction, Tensor, nn, nn::ModuleT};

/// Images/s of one SGD step (forward, loss, backward, update; batch 128, fp32, momentum 0.9, weight
/// decay 1e-4) on synthetic data, for CIFAR ResNet-20/56/110: ours in NCHW and in channels_last (NHWC)
/// layout, and plain PyTorch eager in its default NCHW, alternated `--repeats` times (best of each
/// kept). Prints the ratios and appends them to runs/bench/train_step.csv.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[arg(long, value_delimiter = ',', default_value = "20,56,110")]
    depths: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    batch: i64,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Measurements of each side, alternated (ours, PyTorch, ours, ...); the best of each is kept.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU threads for both sides (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Let cuDNN benchmark its kernels (both sides; CUDA only).
    #[arg(long)]
    cudnn_benchmark: bool,
    /// Python with the same torch (default: RESNET_REPRO_PYTHON, else python3).
    #[arg(long)]
    python: Option<String>,
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
    batch: i64,
    steps: usize,
    ours_contiguous_images_per_s: f64,
    ours_channels_last_images_per_s: f64,
    pytorch_images_per_s: f64,
    ratio_contiguous: f64,
    ratio_channels_last: f64,
}

fn ours_images_per_s(args: &Args, depth: usize, device: tch::Device, format: MemoryFormat) -> Result<f64> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = CifarNet::resnet(depth).build(&vs.root())?;
    set_memory_format(&vs, format)?;
    let mut opt = Sgd::new(&vs, 0.9, 1e-4);
    let x = contiguous(&Tensor::randn([args.batch, 3, 32, 32], (Kind::Float, device)), format)?;
    let y = Tensor::randint(10, [args.batch], (Kind::Int64, device));
    let mut step = || -> Result<()> {
        let loss = net.forward_t(&x, true).cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0);
        opt.zero_grad()?;
        loss.backward();
        opt.step(0.1)
    };
    let mut result = Ok(());
    let secs = time_steps(device, args.warmup, args.steps, || {
        if result.is_ok() {
            result = step();
        }
    });
    result?;
    Ok(args.batch as f64 / secs)
}

fn pytorch_images_per_s(args: &Args, depth: usize, device: &str, python: &str) -> Result<f64> {
    let script = repo_file("bench/pytorch_train_step.py");
    let a = [
        format!("--depth={depth}"),
        format!("--batch={}", args.batch),
        format!("--warmup={}", args.warmup),
        format!("--steps={}", args.steps),
        format!("--device={device}"),
        format!("--threads={}", tch::get_num_threads()),
    ];
    let mut a = a.to_vec();
    if args.cudnn_benchmark {
        a.push("--cudnn-benchmark".into());
    }
    let v = run_python_json(python, &script, &a)?;
    v["images_per_s"].as_f64().ok_or_else(|| anyhow::anyhow!("{}: no images_per_s in {v}", script.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = parse_device(&args.device)?;
    if args.cudnn_benchmark && device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let python = args.python.clone().unwrap_or_else(default_python);
    let torch = TorchInfo::current().version.unwrap_or_else(|| "unknown".into());
    println!(
        "train step, batch {}, fp32, SGD momentum; device {}, {} threads, torch {torch}; images/s",
        args.batch,
        device_name(device),
        tch::get_num_threads()
    );
    println!("{:<10} {:>10} {:>10} {:>10} {:>8} {:>8}", "", "ours", "ours", "PyTorch", "ratio", "ratio");
    println!("{:<10} {:>10} {:>10} {:>10} {:>8} {:>8}", "model", "NCHW", "NHWC", "NCHW", "NCHW", "NHWC");
    for &depth in &args.depths {
        let (mut nchw, mut nhwc, mut theirs) = (0f64, 0f64, 0f64);
        for _ in 0..args.repeats.max(1) {
            nchw = nchw.max(ours_images_per_s(&args, depth, device, MemoryFormat::Contiguous)?);
            theirs = theirs.max(pytorch_images_per_s(&args, depth, &device_name(device), &python)?);
            nhwc = nhwc.max(ours_images_per_s(&args, depth, device, MemoryFormat::ChannelsLast)?);
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
