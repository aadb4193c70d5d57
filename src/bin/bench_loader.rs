//! ImageNet loader throughput (decode + augment + batch) next to torchvision's ImageFolder and
//! DataLoader with the same transforms, same thread count, back to back; and ResNet-50's train step.

use anyhow::{Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use resnet_repro::bench::{BenchEnv, COMMIT, append_csv_row, time_steps, utc_now};
use resnet_repro::data::folder::{ImageFolder, Subset};
use resnet_repro::data::loader::{LoaderSettings, TrainLoader};
use resnet_repro::data::transform::TrainTransform;
use resnet_repro::env::device_name;
use resnet_repro::models::{ImageNetNet, NetSpec, Shortcut};
use resnet_repro::train::{Layout, SgdSettings, Trainer};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Images/s of the ImageNet training loader on generated 500x375 JPEGs (shorter side to [256, 480],
/// random 224 crop, flip, PCA lighting, mean subtraction, batched), ours and torchvision's
/// (ImageFolder + DataLoader with as many workers as our decoding threads), the best of `--repeats`
/// each; then ResNet-50's train-step images/s on the device, to see whether the loader keeps up.
/// Appends to runs/bench/loader.csv.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Generated JPEGs (10 classes).
    #[arg(long, default_value_t = 320)]
    images: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed batches.
    #[arg(long, default_value_t = 12)]
    batches: usize,
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Decoding threads for ours, DataLoader workers for PyTorch (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Batch of the ResNet-50 train step (0: skip it).
    #[arg(long, default_value_t = 32)]
    step_batch: i64,
    #[arg(long, default_value_t = 3)]
    step_steps: usize,
    #[arg(long, default_value = "auto", value_parser = resnet_repro::env::parse_device)]
    device: tch::Device,
    #[arg(long)]
    python: Option<String>,
    #[arg(long, default_value = "runs/bench/loader.csv")]
    csv: PathBuf,
}

#[derive(Serialize)]
struct Row {
    date: String,
    commit: String,
    device: String,
    threads: usize,
    torch: String,
    batch: usize,
    ours_images_per_s: f64,
    pytorch_images_per_s: f64,
    ratio: f64,
    resnet50_step_images_per_s: Option<f64>,
}

/// JPEGs of 500x375 photos-like content (smooth gradients and noise) in `root/train/<class>/`.
fn generate(root: &Path, n: usize) -> Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for i in 0..n {
        let dir = root.join(format!("train/n{:08}", i % 10));
        std::fs::create_dir_all(&dir)?;
        let (a, b) = (rng.random_range(0..256u32), rng.random_range(0..256u32));
        let img = image::RgbImage::from_fn(500, 375, |x, y| {
            let n = rng.random_range(0..24u32);
            image::Rgb([
                ((x * 255 / 499 + a + n) % 256) as u8,
                ((y * 255 / 374 + b + n) % 256) as u8,
                ((x + y + n) % 256) as u8,
            ])
        });
        let path = dir.join(format!("img_{i:05}.JPEG"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn ours(folder: &Arc<ImageFolder>, args: &Args, threads: usize) -> Result<f64> {
    let opts = LoaderSettings { threads, prefetch: 4, skip_corrupt: false }.options(args.batch, 0);
    let mut loader = TrainLoader::start(folder.clone(), TrainTransform::default(), opts, 0, &[])?;
    for _ in 0..args.warmup {
        loader.next_batch()?;
    }
    let t0 = std::time::Instant::now();
    for _ in 0..args.batches {
        let b = loader.next_batch()?;
        let _ = b.to_tensors(tch::Device::Cpu);
    }
    Ok((args.batches * args.batch) as f64 / t0.elapsed().as_secs_f64())
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let threads = if args.threads > 0 {
        args.threads
    } else {
        std::thread::available_parallelism().map_or(4, |n| n.get())
    };
    let env = BenchEnv::new(args.device, args.python.clone())?;
    let device = env.device;
    let dir = tempfile::tempdir()?;
    generate(dir.path(), args.images)?;
    let folder = Arc::new(ImageFolder::scan(&dir.path().join("train"), Subset::default())?);
    println!(
        "loader, {} generated 500x375 JPEGs, batch {}, {threads} threads/workers; {}",
        args.images,
        args.batch,
        env.describe()
    );
    let (mut best_ours, mut best_theirs) = (0f64, 0f64);
    for _ in 0..args.repeats.max(1) {
        best_ours = best_ours.max(ours(&folder, &args, threads)?);
        let py_args = [
            format!("--root={}", dir.path().join("train").display()),
            format!("--batch={}", args.batch),
            format!("--workers={threads}"),
            format!("--warmup={}", args.warmup),
            format!("--batches={}", args.batches),
        ];
        best_theirs = best_theirs.max(env.python_images_per_s("bench/pytorch_loader.py", &py_args)?);
    }
    println!(
        "loader images/s: ours {best_ours:.1}, torchvision {best_theirs:.1}, ratio {:.2}",
        best_ours / best_theirs
    );
    let step = if args.step_batch > 0 {
        let net = NetSpec::ImageNet(ImageNetNet::resnet(50, Shortcut::B));
        let mut trainer =
            Trainer::with_format(&net, SgdSettings::PAPER, 0, device, Layout::Auto.resolve(device))?;
        let x = Tensor::randn([args.step_batch, 3, 224, 224], (Kind::Float, device));
        let y = Tensor::randint(1000, [args.step_batch], (Kind::Int64, device));
        let mut result = Ok(());
        let secs = time_steps(device, 1, args.step_steps, || {
            if result.is_ok() {
                result = trainer.step(&x, &y, 0.1).map(|_| ());
            }
        });
        result?;
        let v = args.step_batch as f64 / secs;
        println!(
            "ResNet-50 train step (batch {}, {}): {v:.1} images/s; the loader {} keep up on this machine",
            args.step_batch,
            device_name(device),
            if best_ours >= v { "does" } else { "does not" }
        );
        Some(v)
    } else {
        None
    };
    append_csv_row(
        &args.csv,
        &Row {
            date: utc_now(),
            commit: COMMIT.to_string(),
            device: device_name(device),
            threads,
            torch: env.torch.clone(),
            batch: args.batch,
            ours_images_per_s: best_ours,
            pytorch_images_per_s: best_theirs,
            ratio: best_ours / best_theirs,
            resnet50_step_images_per_s: step,
        },
    )?;
    println!("appended to {}", args.csv.display());
    Ok(())
}
