//! Bad input, systematically: every parser of outside data (IDX images and labels, gzipped or not;
//! CIFAR-10 batch files; experiment TOML; a checkpoint's state.json, optim.safetensors and
//! model.safetensors; image files) gets valid inputs mutated at random: truncated, emptied, bits
//! flipped, bytes overwritten, header fields set to extremes, garbage appended. Each case must end
//! in `Ok` or an error that names the file: never a panic, a hang, or an allocation sized by a
//! lying header (the largest single allocation is watched).
//!
//! `FUZZ_CASES` cases per parser (default 150; `make fuzz` runs 5000), from `FUZZ_SEED` (default 0).

mod common;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_repro::data::{cifar, fashion_mnist, folder};
use resnet_repro::experiment::Experiment;
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::train::checkpoint;
use resnet_repro::train::optim::Sgd;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, remembering the largest single request.
struct Watch;
static LARGEST: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        LARGEST.fetch_max(size, Ordering::Relaxed);
        unsafe { System.realloc(p, l, size) }
    }
}
#[global_allocator]
static ALLOC: Watch = Watch;

/// No single allocation may exceed this (the valid inputs here are a few hundred KB).
const MAX_ALLOC: usize = 64 << 20;
const MAX_TIME: Duration = Duration::from_secs(10);

fn cases() -> usize {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(150)
}

fn rng(parser: u64) -> ChaCha8Rng {
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(parser))
}

/// A random corruption of `valid`. `fields`: byte offsets of 4-byte big-endian header fields worth
/// setting to extremes.
fn mutate(valid: &[u8], rng: &mut ChaCha8Rng, fields: &[usize]) -> Vec<u8> {
    let mut b = valid.to_vec();
    let n = b.len().max(1);
    match rng.random_range(0..7) {
        0 => b.truncate(rng.random_range(0..n)),
        1 => b.clear(),
        2 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = rng.random_range(0..n);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.random_range(0..8);
                }
            }
        }
        3 => {
            let start = rng.random_range(0..n);
            let end = (start + rng.random_range(1..64)).min(b.len());
            for x in b.iter_mut().take(end).skip(start) {
                *x = rng.next_u32() as u8;
            }
        }
        4 if !fields.is_empty() => {
            let at = fields[rng.random_range(0..fields.len())];
            let v = [0u32, 1, 0x7fff_ffff, u32::MAX, rng.next_u32()][rng.random_range(0..5)];
            if at + 4 <= b.len() {
                b[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        5 => {
            let extra: Vec<u8> = (0..rng.random_range(1..4096)).map(|_| rng.next_u32() as u8).collect();
            b.extend(extra);
        }
        _ => {
            // Every 16-bit big-endian field to its maximum somewhere in the first bytes (image
            // headers: widths, heights, lengths).
            let at = rng.random_range(0..n.min(256));
            for x in b.iter_mut().skip(at).take(2) {
                *x = 0xff;
            }
        }
    }
    b
}

/// Runs `parse` on `cases()` corruptions of `valid` written to `path`: no panic, no hang, no huge
/// allocation, and every error names the file.
fn fuzz(
    name: &str,
    parser: u64,
    valid: &[u8],
    path: &Path,
    fields: &[usize],
    mut parse: impl FnMut(&Path) -> anyhow::Result<()>,
) {
    let mut rng = rng(parser);
    let file = path.file_name().unwrap().to_str().unwrap().to_string();
    let (mut errors, n) = (0, cases());
    std::fs::write(path, valid).unwrap();
    if let Err(e) = parse(path) {
        panic!("{name}: the valid input fails: {e:#}");
    }
    for case in 0..n {
        let bad = mutate(valid, &mut rng, fields);
        std::fs::write(path, &bad).unwrap();
        LARGEST.store(0, Ordering::Relaxed);
        let t0 = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(path)));
        let (took, largest) = (t0.elapsed(), LARGEST.load(Ordering::Relaxed));
        let keep = std::env::temp_dir().join(format!("fuzz-{name}-case{case}"));
        let fail = |what: String| -> ! {
            std::fs::write(&keep, &bad).unwrap();
            panic!("{name} case {case} (input kept in {}): {what}", keep.display())
        };
        match result {
            Err(_) => fail("panicked".into()),
            Ok(Err(e)) => {
                errors += 1;
                let msg = format!("{e:#}");
                if !msg.contains(&file) {
                    fail(format!("an error that does not name {file}: {msg}"));
                }
            }
            Ok(Ok(())) => {}
        }
        if took > MAX_TIME {
            fail(format!("took {took:?}"));
        }
        if largest > MAX_ALLOC {
            fail(format!("allocated {largest} bytes at once"));
        }
    }
    println!("{name}: {n} cases, {errors} errors naming the file, no panic, hang or huge allocation");
}

#[test]
fn idx_files_gzipped_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let fm = dir.path().join("fashion-mnist");
    common::write_fashion_mnist(&fm, 40, 20, true);
    let source = fashion_mnist::Source { system_dirs: vec![], counts: (40, 20), ..Default::default() };
    let load = |_: &Path| fashion_mnist::load(dir.path(), &source, false).map(|_| ());
    load(dir.path()).expect("the valid fixture loads");
    let images = common::idx_images(40);
    let header = [0, 4, 8, 12];
    let gz = fm.join("train-images-idx3-ubyte.gz");
    fuzz("idx images (gzip stream)", 1, &common::gzip(&images), &gz, &[], load);
    // Plain (not gzipped) files, header fields included.
    std::fs::remove_file(&gz).unwrap();
    fuzz("idx images (plain)", 2, &images, &fm.join("train-images-idx3-ubyte"), &header, load);
    std::fs::write(fm.join("train-images-idx3-ubyte"), &images).unwrap();
    std::fs::remove_file(fm.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    fuzz("idx labels (plain)", 3, &common::idx_labels(20), &fm.join("t10k-labels-idx1-ubyte"), &[0, 4], load);
}

#[test]
fn cifar_batch_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_1.bin");
    fuzz("cifar batch", 4, &common::cifar_batch(20, 3), &path, &[], |p| cifar::read_batch(p, 20).map(|_| ()));
}

#[test]
fn experiment_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("experiment.toml");
    let valid = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quick.toml")).unwrap();
    fuzz("experiment toml", 5, &valid, &path, &[], |p| Experiment::from_file(p).map(|_| ()));
}

#[test]
fn checkpoint_files() {
    let dir = tempfile::tempdir().unwrap();
    let net = NetSpec::Cifar(CifarNet { in_channels: 1, ..CifarNet::resnet(8) });
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    net.build(&vs.root()).unwrap();
    let mut opt = Sgd::new(&vs, 0.9, 1e-4);
    let state: checkpoint::TrainState = serde_json::from_str(
        r#"{"iteration": 20, "warmup": "None", "plateau": {"decays": 0, "best": null, "since_best": 0},
            "seconds": 1.5, "seed": 0, "skipped": [3, 7]}"#,
    )
    .unwrap();
    // Momentum buffers exist after a step.
    let loss = opt.params.iter().map(|p| p.sum(tch::Kind::Float)).fold(tch::Tensor::from(0f32), |a, b| a + b);
    loss.backward();
    opt.step(0.1).unwrap();
    let ckpt = checkpoint::save(dir.path(), &vs, &opt, &state).unwrap();
    for (i, file) in ["state.json", "optim.safetensors", "model.safetensors"].into_iter().enumerate() {
        let path = ckpt.join(file);
        let valid = std::fs::read(&path).unwrap();
        let fields = if file.ends_with("safetensors") { vec![0, 4] } else { vec![] };
        fuzz(&format!("checkpoint {file}"), 6 + i as u64, &valid, &path, &fields, |_| {
            checkpoint::load(&ckpt, &mut vs, &mut opt).map(|_| ())
        });
        std::fs::write(&path, valid).unwrap();
    }
}

#[test]
fn image_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = image::RgbImage::new(24, 16);
    for (x, y, p) in img.enumerate_pixels_mut() {
        *p = image::Rgb([(x * 10) as u8, (y * 15) as u8, 128]);
    }
    for (i, (name, format)) in
        [("photo.JPEG", image::ImageFormat::Jpeg), ("drawing.png", image::ImageFormat::Png)]
            .into_iter()
            .enumerate()
    {
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).unwrap();
        let path = dir.path().join(name);
        // JPEG: the SOF0 frame's height and width (and the PNG's IHDR) among the fields.
        let valid = bytes.into_inner();
        let sof = valid.windows(2).position(|w| w == [0xff, 0xc0]).map_or(vec![], |at| vec![at + 5]);
        let fields = if name.ends_with("png") { vec![16, 20] } else { sof };
        fuzz(&format!("image {name}"), 9 + i as u64, &valid, &path, &fields, |p| {
            folder::decode_rgb(p).map(|_| ())
        });
    }
}
