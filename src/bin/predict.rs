//! Classifies image files with a trained network: a run folder, or a released model.safetensors
//! beside its config.toml.

use anyhow::{Context, Result, ensure};
use clap::Parser;
use resnet_repro::data::DataOptions;
use resnet_repro::experiment::RunDir;
use resnet_repro::experiment::config::RunConfig;
use resnet_repro::experiment::predict::{Prediction, Predictor, image_files};
use std::path::PathBuf;

/// Prints the most probable classes of each image file (folders are walked) with a network this
/// suite trained: CIFAR-style nets (CIFAR-10, CIFAR-100, Fashion-MNIST, your folders) or ImageNet
/// nets. Each file is prepared as the run's test protocol prepares test images: for CIFAR-style
/// nets the shorter side resized to the input's and centre-cropped, converted to grey or colour as
/// the net takes (said when the file differs), the training images' per-pixel mean subtracted
/// (the run's data_mean.safetensors, or computed from the training set in --data-dir); for
/// ImageNet nets the run's centre crop and normalisation. A file that cannot be read is reported
/// and the rest still done; the exit status is then 1.
///
///   predict --run results/table6/fashion-mnist/resnet20/seed0 shoe.png photos/
#[derive(Parser)]
#[command(version)]
struct Args {
    /// A run folder (its config.toml, model.safetensors or newest checkpoint, class_index.csv,
    /// data_mean.safetensors).
    #[arg(long, required_unless_present = "weights")]
    run: Option<PathBuf>,
    /// A model.safetensors outside a run folder (with --config).
    #[arg(long, requires = "config", conflicts_with = "run")]
    weights: Option<PathBuf>,
    /// The config.toml of --weights; the class names and mean are looked for beside it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the training set is, when the run has no data_mean.safetensors.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// How many classes to print for each file.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// One JSON array of {file, top: [{index, class, probability}], notes, error?} instead of text.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "auto", value_parser = resnet_repro::env::parse_device)]
    device: tch::Device,
    /// Image files or folders of them.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let device = args.device;
    let (dir, config, weights) = match (&args.run, &args.weights, &args.config) {
        (Some(run), _, _) => {
            let dir = RunDir { path: run.clone() };
            let config = dir.config()?;
            let weights = dir.weights()?.with_context(|| format!("{}: no weights yet", run.display()))?;
            (dir, config, weights)
        }
        (None, Some(w), Some(c)) => {
            let text = std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?;
            let config: RunConfig =
                toml::from_str(&text).with_context(|| format!("parsing {}", c.display()))?;
            let dir = RunDir { path: c.parent().map(PathBuf::from).unwrap_or_default() };
            (dir, config, w.clone())
        }
        _ => anyhow::bail!("--run, or --weights with --config"),
    };
    let data = DataOptions { allow_download: false, ..DataOptions::new(&args.data_dir) };
    let predictor = Predictor::new(config, &weights, &dir, &data, device)?;
    let files = image_files(&args.images)?;
    let predictions = predictor.predict(&files, args.top);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
    } else {
        predictions.iter().for_each(print);
    }
    let failed = predictions.iter().filter(|p| p.error.is_some()).count();
    ensure!(failed == 0, "{failed} of {} files could not be classified", predictions.len());
    Ok(())
}

fn print(p: &Prediction) {
    match &p.error {
        Some(e) => eprintln!("error: {e}"), // Predictor::predict's errors name the file
        None => {
            let top: Vec<String> =
                p.top.iter().map(|r| format!("{} {:.1}%", r.class, 100.0 * r.probability)).collect();
            let notes =
                if p.notes.is_empty() { String::new() } else { format!("  ({})", p.notes.join("; ")) };
            println!("{}: {}{notes}", p.file.display(), top.join(", "));
        }
    }
}
