//! Tables 7 and 8 at full size: Faster R-CNN C4 on an ImageNet ResNet trained on PASCAL VOC or
//! COCO and scored on its test split, beside the paper's numbers (`make reproduce-table7`,
//! `make reproduce-table8`).

use anyhow::{Context, Result, ensure};
use clap::Parser;
use resnet_repro::dist::{GradSync, Launch, Replicas};
use resnet_repro::experiment::Store;
use resnet_repro::experiment::detect_paper::{PaperDetection, default_out, load_sets, run, summary_md};
use std::path::PathBuf;

/// Faster R-CNN C4 (the paper's Appendix A) on the experiment file's backbone, its weights from
/// --weights (ImageNet weights in torchvision's names: `python3 python/resnet_repro_torch.py
/// torchvision-weights resnet101 FILE` writes torchvision's), trained on the training splits and
/// scored on the test split: VOC 2007's 11-point mAP (Table 7) or COCO's mAP@.5 and mAP@[.5,.95]
/// (Table 8). Resumable: stop it at any time, the same command goes on from the last checkpoint.
/// Data-parallel under torchrun (`torchrun --no-python --nproc-per-node 8 target/release/faster_rcnn
/// ...`, or `make reproduce-table7 NPROC=8`): each rank on its GPU takes its share of an update's
/// images, gradients are averaged (NCCL, or Gloo on CPUs), rank 0 writes the run.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Experiment file: experiments/table7_voc.toml or experiments/table8_coco.toml.
    #[arg(long)]
    config: PathBuf,
    /// VOC: the VOCdevkit folder (holding VOC2007/, VOC2012/). COCO: the folder holding
    /// annotations/instances_<split>.json and the <split>/ image folders.
    #[arg(long)]
    data_dir: PathBuf,
    /// The backbone's ImageNet weights (safetensors, torchvision's names).
    #[arg(long)]
    weights: PathBuf,
    /// Output folder (default: runs/<the experiment file's name>, e.g. runs/table7_voc).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to train: auto (the first GPU if any, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = resnet_repro::env::parse_device)]
    device: tch::Device,
    /// CPU threads for libtorch (0: OMP_NUM_THREADS if set, else one per core, or the process's
    /// share of the cores as a torchrun rank).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Under torchrun: seconds a collective may wait for the other ranks before the job fails
    /// with the rank and the operation named.
    #[arg(long, default_value_t = 600)]
    dist_timeout: u64,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(main_())
}

fn main_() -> Result<()> {
    let args = Args::parse();
    resnet_repro::interrupt::install()?;
    let (device, dp) = join(&args)?;
    let e = PaperDetection::load(&args.config)?;
    ensure!(
        args.weights.is_file(),
        "--weights {}: no such file; `scripts/with-torch python3 python/resnet_repro_torch.py torchvision-weights {} {}` \
         writes torchvision's ImageNet weights there (downloads them once)",
        args.weights.display(),
        e.backbone,
        args.weights.display()
    );
    let sets = load_sets(&e, &args.data_dir)
        .with_context(|| format!("the data under {}", args.data_dir.display()))?;
    let store = Store::new(args.out.clone().unwrap_or_else(|| default_out(&args.config)));
    eprintln!(
        "{} training and {} test images",
        resnet_repro::detect::DetectionSet::len(&sets.train),
        sets.test.items.len()
    );
    let record = run(&e, &args.weights, &sets, (&store, device), dp.as_ref())?;
    if dp.as_ref().is_some_and(|d| d.rank() != 0) {
        return Ok(()); // rank 0 writes the summary
    }
    let md = summary_md(&e, &record);
    std::fs::create_dir_all(&store.root)?;
    let path = store.summary_md();
    resnet_repro::fsutil::write_atomic(&path, md.as_bytes())?;
    print!("{md}");
    println!("wrote {}", path.display());
    Ok(())
}

/// The device and threads of this process, and under torchrun (RANK set) its replicas: rank r
/// on GPU `LOCAL_RANK` (NCCL) or on its share of the cores (Gloo).
fn join(args: &Args) -> Result<(tch::Device, Option<Replicas>)> {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    let env = match Launch::from_env()? {
        Launch::Single => {
            if args.threads > 0 {
                tch::set_num_threads(args.threads);
            }
            return Ok((args.device, None));
        }
        Launch::Rank(env) => env,
    };
    match args.threads {
        0 if std::env::var_os("OMP_NUM_THREADS").is_none() => tch::set_num_threads(env.cores(cores) as i32),
        0 => {}
        n => tch::set_num_threads(n),
    }
    let device = env.device(args.device)?;
    let mut dp = Replicas::connect(&env, device, std::time::Duration::from_secs(args.dist_timeout))?;
    dp.grad_sync = GradSync::AfterBackward;
    if env.rank == 0 {
        eprintln!(
            "data-parallel: {} ranks over {}, {} threads each, gradients averaged after the backward pass",
            env.world,
            dp.group.backend,
            tch::get_num_threads()
        );
    }
    Ok((device, Some(dp)))
}
