//! Helpers for the `bench_*` binaries: timing, the plain-PyTorch baselines they are compared with,
//! and the CSV rows they append under `runs/bench/`.

pub use crate::env::{COMMIT, utc_now};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Waits for the device's queued work (a no-op on the CPU), so that timings are of finished work.
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `step` `warmup` times untimed, then `steps` times, and returns the seconds per step.
pub fn time_steps(device: Device, warmup: usize, steps: usize, mut step: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        step();
    }
    synchronize(device);
    let t0 = Instant::now();
    for _ in 0..steps {
        step();
    }
    synchronize(device);
    t0.elapsed().as_secs_f64() / steps.max(1) as f64
}

/// Runs a Python baseline script that prints one line of JSON (its last line) and returns it.
pub fn run_python_json(python: &str, script: &Path, args: &[String]) -> Result<serde_json::Value> {
    let out = Command::new(python).arg(script).args(args).output().with_context(|| {
        format!(
            "running {python} {}: is Python with torch installed? `make bench` provides one",
            script.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "{python} {} {} failed:\n{}",
            script.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .with_context(|| format!("{}: expected a JSON line, got {last:?}", script.display()))
}

/// The Python interpreter for baselines: `RESNET_REPRO_PYTHON` (set by `scripts/with-torch`), else `python3`.
pub fn default_python() -> String {
    std::env::var("RESNET_REPRO_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A file of this repository (`bench/...`), looked up from the working directory first so that binaries
/// copied to another machine with the repository find it there, then where the crate was built.
pub fn repo_file(rel: &str) -> std::path::PathBuf {
    let here = Path::new(rel);
    if here.exists() { here.to_path_buf() } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(rel) }
}

/// Appends `row` to a CSV file, writing the header first if the file is new.
pub fn append_csv_row<T: Serialize>(path: &Path, row: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let is_new = !path.exists() || std::fs::metadata(path)?.len() == 0;
    if !is_new {
        let mut header = csv::Writer::from_writer(Vec::new());
        header.serialize(row)?;
        let ours = String::from_utf8(header.into_inner()?)?.lines().next().unwrap_or_default().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let theirs = text.lines().next().unwrap_or_default();
        anyhow::ensure!(
            theirs == ours,
            "{0} has other columns (an older benchmark's: {theirs}); move it aside (mv {0} {0}.old) and run again",
            path.display()
        );
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut w = csv::WriterBuilder::new().has_headers(is_new).from_writer(file);
    w.serialize(row).with_context(|| format!("writing {}", path.display()))?;
    w.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Flags every benchmark takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// CIFAR ResNet depths to measure.
    #[arg(long, value_delimiter = ',', default_value = "20,56,110")]
    pub depths: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = crate::env::parse_device)]
    pub device: tch::Device,
    /// CPU threads for both sides (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Python with the same torch (default: RESNET_REPRO_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<String>,
}

/// What a benchmark runs on, resolved from [`BenchArgs`].
#[derive(Debug, Clone)]
pub struct BenchEnv {
    pub device: Device,
    pub python: String,
    pub torch: String,
}

impl BenchArgs {
    /// Sets the thread count and resolves device, Python and torch version.
    pub fn setup(&self) -> Result<BenchEnv> {
        if self.threads > 0 {
            tch::set_num_threads(self.threads);
        }
        BenchEnv::new(self.device, self.python.clone())
    }

    /// The flags the Python baselines share: batch, warm-up, steps, device and threads.
    pub fn python_args(&self, env: &BenchEnv) -> Vec<String> {
        vec![
            format!("--batch={}", self.batch),
            format!("--warmup={}", self.warmup),
            format!("--steps={}", self.steps),
            format!("--device={}", crate::env::device_name(env.device)),
            format!("--threads={}", tch::get_num_threads()),
        ]
    }
}

impl BenchEnv {
    /// Resolves `--device` and `--python` (default: [`default_python`]), and reads torch's version.
    pub fn new(device: Device, python: Option<String>) -> Result<BenchEnv> {
        Ok(BenchEnv {
            device,
            python: python.unwrap_or_else(default_python),
            torch: crate::env::TorchInfo::current().version.unwrap_or_else(|| "unknown".into()),
        })
    }

    /// One line naming what the numbers are for.
    pub fn describe(&self) -> String {
        format!(
            "device {}, {} threads, torch {}",
            crate::env::device_name(self.device),
            tch::get_num_threads(),
            self.torch
        )
    }

    /// Runs a baseline script of `bench/` and returns its `images_per_s`.
    pub fn python_images_per_s(&self, script: &str, args: &[String]) -> Result<f64> {
        let path = repo_file(script);
        let v = run_python_json(&self.python, &path, args)?;
        v["images_per_s"]
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("{}: no images_per_s in {v}", path.display()))
    }
}

/// `n` random uint8 32x32 RGB images and labels, drawn from seed 0: CIFAR-shaped data for the
/// benchmarks (one test image).
pub fn synthetic_cifar(n: usize) -> crate::data::Dataset {
    tch::manual_seed(0);
    let images = Tensor::randint(256, [n as i64, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let labels = Tensor::randint(10, [n as i64], (Kind::Int64, Device::Cpu));
    let test = crate::data::ImageSet { images: images.narrow(0, 0, 1), labels: labels.narrow(0, 0, 1) };
    crate::data::Dataset {
        name: crate::data::DatasetName::Cifar10,
        train: crate::data::ImageSet { images, labels },
        test,
        location: "synthetic".into(),
        classes: crate::data::cifar::CLASSES.iter().map(|c| c.to_string()).collect(),
    }
}

/// Seconds per update of `stepper` on `data` (rate 0.1), timed as [`time_steps`] times; the untimed
/// steps cover a capture's eager warm-up and the capture itself, whatever `warmup` says.
pub fn time_stepper(
    device: Device,
    (warmup, steps): (usize, usize),
    stepper: &mut crate::train::Stepper,
    trainer: &mut crate::train::Trainer,
    data: &mut dyn crate::train::TrainData,
) -> Result<f64> {
    let warmup = warmup.max(crate::train::capture::WARMUP_STEPS as usize + 2);
    let (mut it, mut result) = (0u64, Ok(()));
    let secs = time_steps(device, warmup, steps, || {
        if result.is_ok() {
            result = stepper.step(trainer, data, it, 0.1).map(|_| ());
            it += 1;
        }
    });
    if let Some(note) = stepper.take_note() {
        eprintln!("{note}");
    }
    result.map(|_| secs)
}

/// One batch for every step, as the step benchmarks feed it; staged too, so that a captured step
/// (`Stepper`) can draw it: the batch is then the same tensors every replay.
pub struct FixedBatch {
    pub x: Tensor,
    pub y: Tensor,
}

impl crate::train::TrainData for FixedBatch {
    fn train_len(&self) -> usize {
        self.y.size()[0] as usize
    }

    fn has_validation(&self) -> bool {
        false
    }

    fn start(&mut self, _iteration: u64, _skipped: &[usize]) -> Result<()> {
        Ok(())
    }

    fn batch(&mut self, _iteration: u64) -> Result<(Tensor, Tensor)> {
        Ok((self.x.shallow_clone(), self.y.shallow_clone()))
    }

    fn evaluate(
        &mut self,
        _: &crate::models::ResNet,
        _: crate::shim::MemoryFormat,
    ) -> Result<crate::train::Evaluation> {
        bail!("a benchmark's fixed batch has nothing to evaluate on")
    }

    fn staged(&mut self) -> Option<&mut dyn crate::train::Staged> {
        Some(self)
    }
}

impl crate::train::Staged for FixedBatch {
    fn stage(&mut self, _iteration: u64) {}

    fn batch(&self) -> (Tensor, Tensor) {
        (self.x.shallow_clone(), self.y.shallow_clone())
    }

    fn images(&self) -> u64 {
        self.y.size()[0] as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Old {
        model: String,
        ratio: f64,
    }

    #[derive(Serialize)]
    struct New {
        model: String,
        ratio: f64,
        gain: f64,
    }

    #[test]
    fn rows_append_under_one_header_and_other_columns_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b/x.csv");
        for r in [1.0, 2.0] {
            append_csv_row(&path, &Old { model: "resnet20".into(), ratio: r }).unwrap();
        }
        let e = append_csv_row(&path, &New { model: "resnet20".into(), ratio: 1.0, gain: 1.0 }).unwrap_err();
        assert!(format!("{e:#}").contains("has other columns (an older benchmark's: model,ratio)"), "{e:#}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "model,ratio\nresnet20,1.0\nresnet20,2.0\n");
    }
}
