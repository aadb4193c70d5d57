//! Train-step throughput of CIFAR ResNets: ours next to the same network in plain PyTorch eager
//! (bench/pytorch_train_step.py), same torch install and thread count, run back to back.

use anyhow::Result;
use clap::Parser;
use resnet_repro::bench::{
    BenchArgs, BenchEnv, COMMIT, FixedBatch, append_csv_row, time_stepper, time_steps, utc_now,
};
use resnet_repro::env::device_name;
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::shim::{MemoryFormat, contiguous};
use resnet_repro::train::{Precision, SgdSettings, Stepper, Trainer};
use serde::Serialize;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// Images/s of one SGD step (forward, loss, backward, update; batch 128, momentum 0.9, weight
/// decay 1e-4) on synthetic data, for CIFAR ResNet-20/56/110, ours and plain PyTorch eager in four
/// settings each: fp32 NCHW (PyTorch's default), channels_last, bf16 autocast, and both (PyTorch
/// with its fused SGD in the last three), alternated `--repeats` times (best of each kept); on CUDA
/// (or with `--pytorch-compile`) also PyTorch's bf16 channels_last step through torch.compile
/// (CUDA graphs on CUDA), where it runs, and on CUDA ours in that setting captured as a CUDA graph
/// (as training runs it). Prints
/// every figure and two ratios, ours at its best against PyTorch's default and against PyTorch at
/// its best, and appends them to runs/bench/train_step.csv.
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
    /// Also measure PyTorch through torch.compile on the CPU (always on CUDA; each measurement
    /// compiles first, about 40 s here).
    #[arg(long)]
    pytorch_compile: bool,
    /// Only these settings (repeatable: fp32_nchw, fp32_nhwc, bf16_nchw, bf16_nhwc; default all):
    /// the others are left unmeasured (NaN in the CSV), e.g. to measure the release runs' bf16_nhwc
    /// at a deep net in a fraction of the time.
    #[arg(long = "setting")]
    settings: Vec<String>,
    #[arg(long, default_value = "runs/bench/train_step.csv")]
    csv: PathBuf,
}

/// One setting of the switches both sides have.
#[derive(Debug, Clone, Copy)]
struct Setting {
    format: MemoryFormat,
    precision: Precision,
}

impl Setting {
    const ALL: [Setting; 4] = [
        Setting { format: MemoryFormat::Contiguous, precision: Precision::Fp32 },
        Setting { format: MemoryFormat::ChannelsLast, precision: Precision::Fp32 },
        Setting { format: MemoryFormat::Contiguous, precision: Precision::Bf16 },
        Setting { format: MemoryFormat::ChannelsLast, precision: Precision::Bf16 },
    ];

    fn name(&self) -> String {
        let layout = if self.format == MemoryFormat::ChannelsLast { "nhwc" } else { "nchw" };
        format!("{}_{layout}", self.precision)
    }

    /// PyTorch's flags: the default alone without any; the others with its fused SGD.
    fn python_flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.format == MemoryFormat::ChannelsLast {
            f.push("--channels-last".into());
        }
        if self.precision == Precision::Bf16 {
            f.push("--bf16".into());
        }
        if !f.is_empty() {
            f.push("--fused".into());
        }
        f
    }
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
    ours_fp32_nchw: f64,
    ours_fp32_nhwc: f64,
    ours_bf16_nchw: f64,
    ours_bf16_nhwc: f64,
    pytorch_fp32_nchw: f64,
    pytorch_fp32_nhwc: f64,
    pytorch_bf16_nchw: f64,
    pytorch_bf16_nhwc: f64,
    /// PyTorch bf16 channels_last through torch.compile, if measured and it ran.
    pytorch_bf16_nhwc_compiled: Option<f64>,
    /// Ours bf16 channels_last captured as a CUDA graph (CUDA only).
    ours_bf16_nhwc_graph: Option<f64>,
    ours_best: String,
    pytorch_best: String,
    ratio_best_vs_pytorch_default: f64,
    ratio_best_vs_pytorch_best: f64,
}

/// A trainer in setting `s` and one synthetic batch in its layout.
fn setup(args: &Args, env: &BenchEnv, depth: usize, s: Setting) -> Result<(Trainer, Tensor, Tensor)> {
    let (b, device) = (args.bench.batch as i64, env.device);
    let net = NetSpec::Cifar(CifarNet::resnet(depth));
    let mut trainer = Trainer::with_format(&net, SgdSettings::PAPER, 0, device, s.format)?;
    trainer.precision = s.precision;
    let x = contiguous(&Tensor::randn([b, 3, 32, 32], (Kind::Float, device)), s.format)?;
    let y = Tensor::randint(10, [b], (Kind::Int64, device));
    Ok((trainer, x, y))
}

/// Our step in setting `s`, images/s.
fn ours(args: &Args, env: &BenchEnv, depth: usize, s: Setting) -> Result<f64> {
    let (mut trainer, x, y) = setup(args, env, depth, s)?;
    let (b, device) = (args.bench.batch as i64, env.device);
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

fn pytorch(args: &Args, env: &BenchEnv, depth: usize, s: Setting, compile: bool) -> Result<f64> {
    let mut a = args.bench.python_args(env);
    a.push(format!("--depth={depth}"));
    a.extend(s.python_flags());
    if compile {
        a.push("--compile".into());
    }
    if args.cudnn_benchmark {
        a.push("--cudnn-benchmark".into());
    }
    env.python_images_per_s("bench/pytorch_train_step.py", &a)
}

/// Our step in setting `s` captured as a CUDA graph and replayed, as training runs it, best of
/// `--repeats`; `None` (and why, printed) where it is not captured.
fn ours_graph(args: &Args, env: &BenchEnv, depth: usize, s: Setting) -> Result<Option<f64>> {
    let mut best = None;
    for _ in 0..args.repeats.max(1) {
        let (mut trainer, x, y) = setup(args, env, depth, s)?;
        let mut batch = FixedBatch { x, y };
        let (mut stepper, why_not) = Stepper::for_run(true, &trainer, &mut batch);
        if let Some(why) = why_not {
            println!("ours captured did not run: {why}");
            return Ok(None);
        }
        let counts = (args.bench.warmup, args.bench.steps);
        let secs = time_stepper(env.device, counts, &mut stepper, &mut trainer, &mut batch)?;
        if !stepper.is_captured() {
            return Ok(None); // the capture failed, and said why
        }
        let v = args.bench.batch as f64 / secs;
        best = Some(best.map_or(v, |b: f64| b.max(v)));
    }
    Ok(best)
}

/// PyTorch's best setting through torch.compile, best of `--repeats`; `None` (and why, printed)
/// where it does not run.
fn pytorch_compiled(args: &Args, env: &BenchEnv, depth: usize) -> Option<f64> {
    let best = Setting::ALL[3];
    let mut result = None;
    for _ in 0..args.repeats.max(1) {
        match pytorch(args, env, depth, best, true) {
            Ok(v) => result = Some(result.map_or(v, |r: f64| r.max(v))),
            Err(e) => {
                println!("PyTorch with torch.compile did not run: {e:#}");
                return None;
            }
        }
    }
    result
}

/// The best of each side in every setting, alternated `--repeats` times: (ours, PyTorch).
fn measure(args: &Args, env: &BenchEnv, depth: usize) -> Result<([f64; 4], [f64; 4])> {
    let (mut us, mut them) = ([f64::NAN; 4], [f64::NAN; 4]);
    let wanted = |s: &Setting| args.settings.is_empty() || args.settings.contains(&s.name());
    for _ in 0..args.repeats.max(1) {
        for (i, s) in Setting::ALL.iter().enumerate().filter(|(_, s)| wanted(s)) {
            us[i] = us[i].max(ours(args, env, depth, *s)?);
            them[i] = them[i].max(pytorch(args, env, depth, *s, false)?);
        }
    }
    Ok((us, them))
}

/// The index and value of the largest.
fn best(v: &[f64; 4]) -> (usize, f64) {
    v.iter().copied().enumerate().fold((0, f64::MIN), |b, (i, x)| if x > b.1 { (i, x) } else { b })
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let env = args.bench.setup()?;
    if args.cudnn_benchmark && env.device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    println!("train step, batch {}, SGD momentum; {}; images/s", args.bench.batch, env.describe());
    let names: Vec<String> = Setting::ALL.iter().map(Setting::name).collect();
    if let Some(bad) = args.settings.iter().find(|s| !names.contains(s)) {
        anyhow::bail!("--setting {bad}: one of {}", names.join(", "));
    }
    println!("{:<10} {:<8} {:>10} {:>10} {:>10} {:>10}", "model", "", names[0], names[1], names[2], names[3]);
    for &depth in &args.bench.depths {
        let (us, them) = measure(&args, &env, depth)?;
        let compiled = (args.pytorch_compile || env.device.is_cuda())
            .then(|| pytorch_compiled(&args, &env, depth))
            .flatten();
        let graph =
            if env.device.is_cuda() { ours_graph(&args, &env, depth, Setting::ALL[3])? } else { None };
        let ((ib, eager_ours), (it, eager)) = (best(&us), best(&them));
        let (ours_best, ob) = match graph {
            Some(g) if g > eager_ours => (format!("{}_graph", names[3]), g),
            _ => (names[ib].clone(), eager_ours),
        };
        let (pytorch_best, tb) = match compiled {
            Some(c) if c > eager => (format!("{}_compiled", names[3]), c),
            _ => (names[it].clone(), eager),
        };
        let row = Row {
            date: utc_now(),
            commit: COMMIT.to_string(),
            device: device_name(env.device),
            threads: tch::get_num_threads(),
            torch: env.torch.clone(),
            model: format!("resnet{depth}"),
            batch: args.bench.batch,
            steps: args.bench.steps,
            ours_fp32_nchw: us[0],
            ours_fp32_nhwc: us[1],
            ours_bf16_nchw: us[2],
            ours_bf16_nhwc: us[3],
            pytorch_fp32_nchw: them[0],
            pytorch_fp32_nhwc: them[1],
            pytorch_bf16_nchw: them[2],
            pytorch_bf16_nhwc: them[3],
            pytorch_bf16_nhwc_compiled: compiled,
            ours_bf16_nhwc_graph: graph,
            ours_best,
            pytorch_best,
            ratio_best_vs_pytorch_default: ob / them[0],
            ratio_best_vs_pytorch_best: ob / tb,
        };
        for (who, v) in [("ours", us), ("PyTorch", them)] {
            println!(
                "{:<10} {who:<8} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                row.model, v[0], v[1], v[2], v[3]
            );
        }
        if let Some(c) = compiled {
            println!("{:<10} PyTorch bf16_nhwc through torch.compile: {c:.1}", row.model);
        }
        if let Some(g) = graph {
            println!("{:<10} ours bf16_nhwc captured as a CUDA graph: {g:.1}", row.model);
        }
        println!(
            "{:<10} ours' best ({}) / PyTorch's default {:.3}, / PyTorch's best ({}) {:.3}",
            row.model,
            row.ours_best,
            row.ratio_best_vs_pytorch_default,
            row.pytorch_best,
            row.ratio_best_vs_pytorch_best
        );
        append_csv_row(&args.csv, &row)?;
    }
    println!("appended to {}", args.csv.display());
    Ok(())
}
