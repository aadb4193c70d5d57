//! Helpers shared by the integration tests: a local HTTP server, and small dataset files written in
//! the real formats.
#![allow(dead_code)]

pub mod detect;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

/// How the server answers a path.
#[derive(Clone)]
pub enum Reply {
    /// The whole body.
    Full(Vec<u8>),
    /// Announces the whole body's length but closes the connection after this many bytes.
    CutAfter(Vec<u8>, usize),
}

/// Serves `routes` on 127.0.0.1 (a free port) from a background thread; returns the base URL.
/// Unknown paths get 404.
pub fn serve(routes: HashMap<String, Reply>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let _ = match routes.get(&path) {
                Some(Reply::Full(body)) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    stream.write_all(body)
                }
                Some(Reply::CutAfter(body, n)) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body[..*n]);
                    stream.flush()
                }
                None => {
                    write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                }
            };
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    format!("http://{addr}")
}

/// A CIFAR-10 batch file's bytes: `records` records whose label is `i % 10` and whose pixels are
/// `(i + offset) % 256` with channel c, row y, column x adding `c * 7 + y * 3 + x`.
pub fn cifar_batch(records: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(records * 3073);
    for i in 0..records {
        out.push((i % 10) as u8);
        for c in 0..3usize {
            for y in 0..32usize {
                for x in 0..32usize {
                    out.push(((i + seed as usize + c * 7 + y * 3 + x) % 256) as u8);
                }
            }
        }
    }
    out
}

/// A cifar-10-binary.tar.gz with `records` records in each of the six batch files.
pub fn cifar_archive(records: usize) -> Vec<u8> {
    let mut builder =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let mut names: Vec<String> = (1..=5).map(|k| format!("data_batch_{k}.bin")).collect();
    names.push("test_batch.bin".into());
    for (k, name) in names.iter().enumerate() {
        let data = cifar_batch(records, k as u8);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), &data[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// IDX image bytes: `n` 28x28 images, pixel (i, y, x) = (i + y + x) % 256.
pub fn idx_images(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [2051u32, n as u32, 28, 28] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for i in 0..n {
        for y in 0..28 {
            for x in 0..28 {
                out.push(((i + y + x) % 256) as u8);
            }
        }
    }
    out
}

/// IDX label bytes: label i = i % 10.
pub fn idx_labels(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [2049u32, n as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend((0..n).map(|i| (i % 10) as u8));
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes the four Fashion-MNIST files (gzipped or not) with `train`/`test` images into `dir`.
pub fn write_fashion_mnist(dir: &Path, train: usize, test: usize, gz: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let files = [
        ("train-images-idx3-ubyte", idx_images(train)),
        ("train-labels-idx1-ubyte", idx_labels(train)),
        ("t10k-images-idx3-ubyte", idx_images(test)),
        ("t10k-labels-idx1-ubyte", idx_labels(test)),
    ];
    for (stem, bytes) in files {
        if gz {
            std::fs::write(dir.join(format!("{stem}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(stem), bytes).unwrap();
        }
    }
}

/// Names of the files in a folder (recursively), sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_in(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A run of the store in `out`: the resolved config of `net` on `dataset` (Table 6's recipe, or a
/// quick one), `metrics.csv` with error curves falling to `final_err`, and `final.json` unless
/// `finished` is false. Returns its folder.
pub fn fixture_run(
    out: &Path,
    dataset: resnet_repro::data::DatasetName,
    preset: resnet_repro::experiment::Preset,
    net: resnet_repro::models::NetSpec,
    seed: u64,
    final_err: f64,
    finished: bool,
) -> resnet_repro::experiment::RunDir {
    use resnet_repro::data::{DataConfig, DatasetName, TensorOptions};
    use resnet_repro::experiment::{Experiment, FinalRecord, RunConfig, Store};
    use resnet_repro::train::metrics::{MetricsRow, MetricsWriter};
    let table6 = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/table6_cifar10.toml");
    let train = Experiment::from_file(&table6).unwrap().train;
    let data = match dataset {
        DatasetName::FashionMnist => DataConfig::FashionMnist(TensorOptions::default()),
        _ => DataConfig::Cifar10(TensorOptions::default()),
    };
    let cfg = RunConfig { experiment: "t".into(), preset, seed, net, train, data };
    let dir = Store::new(out).run(&cfg);
    dir.claim(&cfg).unwrap();
    let mut w = MetricsWriter::create(&dir.files().metrics).unwrap();
    for k in 1..=64u64 {
        let it = k * 1000;
        let decay = (-(k as f64) / 12.0).exp();
        w.append(&MetricsRow {
            iteration: it,
            epoch: it as f64 * 128.0 / 50_000.0,
            lr: 0.1,
            train_loss: 2.0 * decay,
            train_error: (final_err - 3.0).max(0.5) + 60.0 * decay,
            val_error: None,
            val_top5_error: None,
            test_error: (k % 4 == 0).then_some(final_err + 60.0 * decay),
            skipped_images: 0,
            seconds: k as f64,
        })
        .unwrap();
    }
    if finished {
        let record = FinalRecord {
            net: cfg.net.name(),
            depth: cfg.net.depth(),
            residual: cfg.net.residual(),
            dataset,
            preset,
            seed,
            iterations: 64_000,
            test_error: Some(final_err),
            test_images: 10_000,
            val_error: None,
            val_top5_error: None,
            skipped_images: 0,
            train_error: final_err - 3.0,
            seconds: 1234.0,
            device: "cuda:0".into(),
            torch: "2.11.0+cu130".into(),
            commit: "abc1234".into(),
            warmup_ended_at: None,
            finished: "2026-11-27T00:00:00Z".into(),
            replicas: 1,
            precision: resnet_repro::train::Precision::Fp32,
        };
        dir.write_final(&record).unwrap();
    }
    dir
}

/// Runner options for a test: a Fashion-MNIST fixture of 64 training and 24 test images written
/// under `dir/data` (nothing else looked at, nothing downloaded), runs in `store`, quiet, CPU.
pub fn fixture_runner(dir: &Path, store: &Path) -> resnet_repro::experiment::RunnerOptions {
    write_fashion_mnist(&dir.join("data/fashion-mnist"), 64, 24, true);
    runner_over(&dir.join("data"), store, (64, 24))
}

/// Runner options over the Fashion-MNIST-shaped files of `(train, test)` images in
/// `data/fashion-mnist/` (no download, no system folder), on the CPU, quiet, the store in `store`.
pub fn runner_over(
    data: &Path,
    store: &Path,
    counts: (usize, usize),
) -> resnet_repro::experiment::RunnerOptions {
    use resnet_repro::data::{DataOptions, fashion_mnist, loader::LoaderSettings};
    let mut data = DataOptions::new(data);
    data.allow_download = false;
    data.fashion_mnist = fashion_mnist::Source { system_dirs: vec![], counts, ..Default::default() };
    resnet_repro::experiment::RunnerOptions {
        store: resnet_repro::experiment::Store::new(store),
        data,
        loader: LoaderSettings { threads: 1, prefetch: 1, skip_corrupt: false },
        train: resnet_repro::train::TrainOptions {
            progress_bar: false,
            ..resnet_repro::train::TrainOptions::new(tch::Device::Cpu)
        },
        only: vec![],
        estimate: None,
    }
}

/// Runs a reference script under tests/python/ with the Python `make test` provides
/// (RESNET_REPRO_PYTHON, else python3); panics with its stderr if it fails.
pub fn run_python_reference(script: &str, args: &[&std::ffi::OsStr]) {
    let py = std::env::var("RESNET_REPRO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let out = std::process::Command::new(&py).arg(&script).args(args).output().unwrap_or_else(|e| {
        panic!("this test needs Python 3 with torch 2.11 ({py}: {e}); `make test` provides it, or set RESNET_REPRO_PYTHON")
    });
    assert!(
        out.status.success(),
        "{py} {} failed (needs torch 2.11; `make test` provides it):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// libtorch's random generator is process-wide, and the tests of a file run on parallel threads:
/// the tests that draw from it (synthetic data, network init) take this lock so that a seed set in
/// one is not consumed by another.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// An ImageNet-layout folder at `dir` (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`): `classes`
/// classes of `per_class.0` training and `per_class.1` validation JPEGs of a few sizes, their
/// colours depending on the class (something to learn); with `broken`, one more training file that
/// does not decode.
#[allow(dead_code)]
pub fn write_image_folder(dir: &Path, classes: usize, per_class: (usize, usize), broken: bool) {
    for (split, count) in [("train", per_class.0), ("val", per_class.1)] {
        for c in 0..classes {
            let class_dir = dir.join(split).join(format!("n{:08}", 1000 + c));
            std::fs::create_dir_all(&class_dir).unwrap();
            for i in 0..count {
                let (w, h) = (40 + (i * 7 % 24) as u32, 40 + (i * 11 % 24) as u32);
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let v = |k: u32| {
                        ((c as u32 * 80 + x * (3 + k) + y * (5 - k) + i as u32 * 7 + k * 50) % 256) as u8
                    };
                    image::Rgb([v(0), v(1), v(2)])
                });
                img.save(class_dir.join(format!("{split}_{i:03}.JPEG"))).unwrap();
            }
        }
    }
    if broken {
        std::fs::write(dir.join("train/n00001000/train_zzz_broken.JPEG"), b"not a JPEG").unwrap();
    }
}

/// How far apart two sets of named tensors are, each tensor's difference taken relative to its
/// own scale: the largest `max |a - b| / max |b|` over the tensors (a BN running variance of 300
/// and a conv weight of 0.05 are compared alike; float32 in another summation order moves either
/// by ~1e-7 of itself, whatever the CPU). Both sets must have the same names.
pub fn relative_difference(a: &HashMap<String, tch::Tensor>, b: &HashMap<String, tch::Tensor>) -> f64 {
    assert_eq!(a.len(), b.len(), "different variables");
    relative_difference_of(a.iter().map(|(name, t)| (t, &b[name])))
}

/// [`relative_difference`] over pairs of tensors, each relative to the scale of the second.
pub fn relative_difference_of<'a>(
    pairs: impl IntoIterator<Item = (&'a tch::Tensor, &'a tch::Tensor)>,
) -> f64 {
    let scale = |t: &tch::Tensor| t.abs().max().double_value(&[]).max(f64::MIN_POSITIVE);
    pairs.into_iter().map(|(a, b)| (a - b).abs().max().double_value(&[]) / scale(b)).fold(0.0, f64::max)
}

/// Summation order, not a bug: `diff`, the difference between two computations that should agree,
/// is at least `RATIO` times below `effect`, the difference the behaviour under test makes (the
/// same comparison with the behaviour removed). A tolerance derived from the effect it guards
/// holds on any CPU, unlike a fixed one: rounding is ~1e-7 relative, an effect ~1e-3 or more.
pub fn assert_far_below(diff: f64, effect: f64, what: &str) {
    const RATIO: f64 = 100.0;
    println!("{what}: differ by {diff:.2e}, the effect guarded is {effect:.2e} ({:.0}x)", effect / diff);
    assert!(effect > 0.0, "{what}: the effect guarded is zero: the test would pass vacuously");
    assert!(
        diff * RATIO < effect,
        "{what}: differ by {diff:.3e}, not {RATIO}x below the effect guarded, {effect:.3e}"
    );
}

/// A CIFAR-100 file's bytes: record i has coarse label `i % 20`, fine label `(i * 7) % 100` and
/// pixels `(i + seed + c * 7 + y * 3 + x) % 256`.
pub fn cifar100_file(records: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(records * 3074);
    for i in 0..records {
        out.push((i % 20) as u8);
        out.push(((i * 7) % 100) as u8);
        for c in 0..3usize {
            for y in 0..32usize {
                for x in 0..32usize {
                    out.push(((i + seed as usize + c * 7 + y * 3 + x) % 256) as u8);
                }
            }
        }
    }
    out
}

/// A cifar-100-binary.tar.gz with `train` and `test` records, and the two lists of class names
/// (`fine_00`.., `coarse_00`..).
pub fn cifar100_archive(train: usize, test: usize) -> Vec<u8> {
    let mut builder =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let names =
        |kind: &str, n: usize| (0..n).map(|i| format!("{kind}_{i:02}\n")).collect::<String>().into_bytes();
    let files = [
        ("train.bin", cifar100_file(train, 0)),
        ("test.bin", cifar100_file(test, 1)),
        ("fine_label_names.txt", names("fine", 100)),
        ("coarse_label_names.txt", names("coarse", 20)),
    ];
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("cifar-100-binary/{name}"), &data[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// The variable that lets tests whose prerequisite is missing (Gloo, Fashion-MNIST) skip instead of
/// fail: without it such a test fails naming what to install, so `make test` never reports as
/// checked what it did not check.
pub const ALLOW_SKIP: &str = "RESNET_REPRO_ALLOW_SKIP";

/// Whether a test may go on: `have`, else a failure with `why` (what to install), or, where
/// [`ALLOW_SKIP`] is set, `false` after saying that the test was skipped and why.
pub fn prerequisite(have: bool, why: &str) -> bool {
    if have {
        return true;
    }
    assert!(
        std::env::var_os(ALLOW_SKIP).is_some(),
        "{why} (or set {ALLOW_SKIP}=1 to skip the tests that need it)"
    );
    eprintln!("SKIPPED ({ALLOW_SKIP} is set): {why}");
    false
}

/// Debian's Fashion-MNIST, the real data some tests train or evaluate on.
pub const SYSTEM_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Whether Debian's Fashion-MNIST is here (see [`prerequisite`]).
pub fn fashion_mnist_installed() -> bool {
    prerequisite(
        Path::new(SYSTEM_FASHION_MNIST).is_dir(),
        "no Fashion-MNIST in /usr/share/datasets/fashion-mnist: apt-get install dataset-fashion-mnist",
    )
}

/// What `make -n ARGS` prints in the repository: the commands a target would run, none run.
pub fn make_dry_run(args: &[&str]) -> String {
    let o = std::process::Command::new("make")
        .arg("-n")
        .args(args)
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "make -n {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}
