//! Writes a small ImageNet-layout folder (train/<class>/*.JPEG, val/<class>/*.JPEG) from a dataset
//! this machine has, to try the ImageNet pipeline end to end before pointing it at ILSVRC-2012.

use anyhow::{Context, Result};
use clap::Parser;
use image::{GrayImage, RgbImage, imageops::FilterType};
use rand::{Rng, SeedableRng};
use resnet_repro::data::{DataConfig, DataOptions, Dataset, DatasetName, ImageSet};
use std::path::{Path, PathBuf};

/// Exports images of Fashion-MNIST (or CIFAR-10) as JPEGs in ImageNet's folder layout, upscaled to
/// random sizes (shorter side 140..300, landscape and portrait) like ImageNet's photos, into
/// `<out>/train/<class>/` and `<out>/val/<class>/`. Not ImageNet: a stand-in to exercise the loader,
/// the training and the evaluation protocols. --native writes PNGs at the dataset's own size.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// cifar10 or fashion-mnist.
    #[arg(long, default_value = "fashion-mnist")]
    from: DatasetName,
    /// Where the source dataset is (or is downloaded to).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    #[arg(long, default_value = "data/imagenet-sample")]
    out: PathBuf,
    #[arg(long, default_value_t = 40)]
    train_per_class: usize,
    #[arg(long, default_value_t = 10)]
    val_per_class: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// PNGs at the dataset's own size (28x28 grey, 32x32 colour) instead of upscaled JPEGs: a
    /// small-image folder for the CIFAR nets (`dataset = "folder"`) or images for `predict`.
    #[arg(long)]
    native: bool,
}

fn export(
    set: &ImageSet,
    split: &Path,
    names: &[&str],
    (per_class, native): (usize, bool),
    rng: &mut impl Rng,
) -> Result<usize> {
    let labels = Vec::<i64>::try_from(&set.labels)?;
    let (c, h, w) = (set.images.size()[1], set.images.size()[2] as u32, set.images.size()[3] as u32);
    let mut written = vec![0usize; names.len()];
    for (i, &label) in labels.iter().enumerate() {
        let k = label as usize;
        if written[k] >= per_class {
            continue;
        }
        let short = rng.random_range(140..=300u32);
        let long = short * rng.random_range(100..=150u32) / 100;
        let (nw, nh) = if native {
            (w, h)
        } else if rng.random_bool(0.5) {
            (long, short)
        } else {
            (short, long)
        };
        let format = if native { image::ImageFormat::Png } else { image::ImageFormat::Jpeg };
        let pixels =
            Vec::<u8>::try_from(&set.images.get(i as i64).permute([1, 2, 0]).contiguous().view([-1]))?;
        let dir = split.join(format!("c{k:02}_{}", names[k]));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}_{i:06}.{}", names[k], if native { "png" } else { "JPEG" }));
        if c == 1 {
            let img = GrayImage::from_raw(w, h, pixels).context("image size")?;
            image::imageops::resize(&img, nw, nh, FilterType::Triangle).save_with_format(&path, format)
        } else {
            let img = RgbImage::from_raw(w, h, pixels).context("image size")?;
            image::imageops::resize(&img, nw, nh, FilterType::Triangle).save_with_format(&path, format)
        }
        .with_context(|| format!("writing {}", path.display()))?;
        written[k] += 1;
        if written.iter().all(|&n| n >= per_class) {
            break;
        }
    }
    Ok(written.iter().sum())
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let config = DataConfig::downloadable(args.from).context("--from")?;
    let ds = Dataset::load(&config, &DataOptions::new(&args.data_dir))?;
    let names: Vec<&str> = ds.classes.iter().map(String::as_str).collect();
    let names = &names[..];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let n_train =
        export(&ds.train, &args.out.join("train"), names, (args.train_per_class, args.native), &mut rng)?;
    let n_val = export(&ds.test, &args.out.join("val"), names, (args.val_per_class, args.native), &mut rng)?;
    println!(
        "wrote {n_train} training and {n_val} validation {} of {} classes from {} to {}",
        if args.native { "PNGs" } else { "JPEGs" },
        names.len(),
        args.from,
        args.out.display()
    );
    Ok(())
}
