//! Evaluates a checkpoint, a finished run or torchvision-format weights on an ImageNet-layout
//! validation folder with a chosen protocol, and appends the result to a CSV; or a finished
//! CIFAR-style run (CIFAR-10, Fashion-MNIST) on its test set, against its final.json.

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use resnet_repro::bench::append_csv_row;
use resnet_repro::data::DataConfig;
use resnet_repro::data::folder::{ImageFolder, Subset};
use resnet_repro::data::loader::LoaderSettings;
use resnet_repro::data::transform::{Normalize, TrainTransform};
use resnet_repro::data::{EvalGeometry, Protocol};
use resnet_repro::env::{device_name, utc_now};
use resnet_repro::eval::{EvalOptions, evaluate_folder, reestimate_bn_from_folder, spread};
use resnet_repro::experiment::RunDir;
use resnet_repro::models::{BottleneckStride, ImageNetNet, NetSpec, Shortcut, load_net};
use resnet_repro::shim::MemoryFormat;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Top-1/top-5 error of ImageNet weights on a validation folder (val/<wnid>/*.JPEG), with the
/// centre-crop, 10-crop or multi-scale protocol. --weights takes a run folder (its config.toml
/// gives the network, normalisation and sizes), a checkpoint folder, or a .safetensors file (ours,
/// or torchvision's state dict saved as safetensors: add --torchvision).
///
/// A CIFAR-style run folder (a released one under results/ too) needs no --val-dir: its test
/// error is measured again from its model.safetensors on the test set its config.toml names, and
/// compared with its final.json (equal on the CPU; --threads as the run trained, 1 for the
/// releases). The exit status is 1 if they differ.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[arg(long)]
    weights: PathBuf,
    /// The validation folder (ImageNet weights).
    #[arg(long)]
    val_dir: Option<PathBuf>,
    /// CIFAR-style runs: the folder with the datasets (as the experiment binaries' --data-dir).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// center, ten-crop or multi-scale.
    #[arg(long, default_value = "ten-crop")]
    protocol: Protocol,
    /// Network, when --weights is not a run folder: resnet18..resnet152 or plain18..plain152.
    #[arg(long)]
    arch: Option<String>,
    #[arg(long, default_value = "B")]
    shortcut: Shortcut,
    /// Bottleneck stride placement: 1x1 (paper) or 3x3 (torchvision, "v1.5").
    #[arg(long, default_value = "1x1")]
    stride: BottleneckStride,
    /// torchvision's weights: option B, stride in the 3x3 conv, torchvision's normalisation.
    #[arg(long)]
    torchvision: bool,
    /// Evaluate this many images, spread over the classes (all by default).
    #[arg(long)]
    images: Option<usize>,
    /// Re-estimate BN statistics over this many training images first (needs --train-dir).
    #[arg(long)]
    bn_reestimate: Option<usize>,
    #[arg(long)]
    train_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 50)]
    batch: usize,
    #[arg(long, default_value = "auto", value_parser = resnet_repro::env::parse_device)]
    device: tch::Device,
    /// Threads: image decoding (ImageNet) or libtorch's (CIFAR-style runs); 0: one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, default_value = "runs/eval/evaluate.csv")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Row {
    date: String,
    weights: String,
    net: String,
    protocol: String,
    top1_error: f64,
    top5_error: f64,
    images: usize,
    bn_reestimated_over: Option<usize>,
    device: String,
    seconds: f64,
}

/// (network, normalisation, geometry, weights file) for `--weights`.
fn resolve(args: &Args, classes: usize) -> Result<(ImageNetNet, Normalize, EvalGeometry, PathBuf)> {
    let w = &args.weights;
    let run = RunDir { path: w.clone() };
    if run.config_path().is_file() {
        let cfg = run.config()?;
        let (NetSpec::ImageNet(net), DataConfig::ImageNet(data)) = (cfg.net, cfg.data) else {
            bail!("{}: not an ImageNet run", run.config_path().display())
        };
        let file = run.weights()?.with_context(|| format!("{}: no weights yet", w.display()))?;
        return Ok((net, data.transform.normalize, data.geometry, file));
    }
    let file = if w.is_dir() { w.join(resnet_repro::train::checkpoint::WEIGHTS_FILE) } else { w.clone() };
    let Some(arch) = &args.arch else {
        bail!("--arch is needed when --weights is not a run folder (e.g. --arch resnet50)")
    };
    let net = ImageNetNet::from_arch(arch, args.shortcut).context("--arch")?;
    let mut net = ImageNetNet { num_classes: classes as i64, bottleneck_stride: args.stride, ..net };
    let mut normalize = Normalize::PAPER;
    if args.torchvision {
        (net.shortcut, net.bottleneck_stride, normalize) =
            (Shortcut::B, BottleneckStride::Conv3x3, Normalize::TORCHVISION);
    }
    Ok((net, normalize, EvalGeometry::default(), file))
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let device = args.device;
    let threads = if args.threads > 0 {
        args.threads
    } else {
        std::thread::available_parallelism().map_or(4, |n| n.get())
    };
    let run = RunDir { path: args.weights.clone() };
    if run.config_path().is_file() && !matches!(run.config()?.data, DataConfig::ImageNet(_)) {
        tch::set_num_threads(threads as i32);
        return test_again(&run, &args.data_dir, device);
    }
    let val_dir = args.val_dir.as_ref().context("--val-dir is needed for ImageNet weights")?;
    let val = ImageFolder::scan(val_dir, Subset::default())?;
    let (net_cfg, normalize, geometry, file) = resolve(&args, val.classes.len())?;
    let format = if device.is_cuda() { MemoryFormat::Contiguous } else { MemoryFormat::ChannelsLast };
    let (vs, net) = load_net(&NetSpec::ImageNet(net_cfg.clone()), &file, device, format)?;
    let reestimated = match (args.bn_reestimate, &args.train_dir) {
        (Some(k), Some(dir)) => {
            let train = Arc::new(ImageFolder::scan(dir, Subset::default())?);
            val.check_same_classes(&train)?;
            let opts = LoaderSettings { threads, prefetch: 4, skip_corrupt: false }.options(args.batch, 0);
            let transform = TrainTransform { normalize, ..TrainTransform::default() };
            Some(reestimate_bn_from_folder((&net, &vs, format), train, &transform, opts, 0, k)?)
        }
        (Some(_), None) => bail!("--bn-reestimate needs --train-dir"),
        _ => None,
    };
    let indices = args.images.map(|k| spread(val.len(), k));
    let opts = EvalOptions {
        protocol: args.protocol,
        geometry,
        normalize,
        batch: args.batch,
        threads,
        device,
        format,
        progress: true,
        replicas: None,
    };
    let r = evaluate_folder(&net, &val, indices.as_deref(), &opts)?;
    println!(
        "{} on {} ({} images, {}): top-1 error {:.2}%, top-5 error {:.2}%",
        net_cfg.name(),
        val_dir.display(),
        r.images,
        r.protocol,
        r.top1_error,
        r.top5_error
    );
    append_csv_row(
        &args.out,
        &Row {
            date: utc_now(),
            weights: display(&file),
            net: net_cfg.name(),
            protocol: r.protocol.to_string(),
            top1_error: r.top1_error,
            top5_error: r.top5_error,
            images: r.images,
            bn_reestimated_over: reestimated,
            device: device_name(device),
            seconds: r.seconds,
        },
    )?;
    println!("appended to {}", args.out.display());
    Ok(())
}

/// A CIFAR-style run's test error measured again, against its final.json.
fn test_again(run: &RunDir, data_dir: &Path, device: tch::Device) -> Result<()> {
    let record = run
        .final_record()?
        .with_context(|| format!("{}: not finished (no final.json)", run.path.display()))?;
    let data = resnet_repro::data::DataOptions {
        allow_download: false,
        ..resnet_repro::data::DataOptions::new(data_dir)
    };
    let e = resnet_repro::experiment::release::reevaluate(run, &data, device)?;
    let (got, want) =
        (e.test_error.context("no test error")?, record.test_error.context("final.json has no test error")?);
    println!(
        "{} ({}, {} test images, {}): test error {got:.2}%; final.json says {want:.2}% ({})",
        record.net,
        record.dataset,
        e.images,
        device_name(device),
        if got == want && e.images == record.test_images { "equal" } else { "DIFFERENT" }
    );
    ensure!(
        got == want && e.images == record.test_images,
        "{}: the test error differs from final.json",
        run.path.display()
    );
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
