//! Loaders on files the tests write (valid and corrupted), the downloader against a local HTTP
//! server (good archive, wrong checksum, connection cut midway), and the batched augmentation.

mod common;

use common::*;
use resnet_repro::data::augment::{EpochPlan, pad_crop_flip};
use resnet_repro::data::{DataConfig, DataOptions, Dataset, DatasetName, Prepared, cifar, fashion_mnist};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn cifar_batch_file_is_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_1.bin");
    std::fs::write(&path, cifar_batch(4, 5)).unwrap();
    let set = cifar::read_batch(&path, 4).unwrap();
    assert_eq!(set.images.size(), [4, 3, 32, 32]);
    assert_eq!(set.images.kind(), Kind::Uint8);
    assert_eq!(Vec::<i64>::try_from(&set.labels).unwrap(), [0, 1, 2, 3]);
    // Record 2, green channel, row 3, column 4: (2 + 5 + 7 + 9 + 4) % 256.
    assert_eq!(set.images.int64_value(&[2, 1, 3, 4]), 27);
    assert_eq!(set.images.int64_value(&[3, 2, 31, 31]), 3 + 5 + 14 + 93 + 31);
}

#[test]
fn corrupted_cifar_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_3.bin");
    let mut bytes = cifar_batch(4, 0);
    bytes.pop();
    std::fs::write(&path, &bytes).unwrap();
    let e = err_text(cifar::read_batch(&path, 4));
    assert!(
        e.contains("data_batch_3.bin") && e.contains("12291 bytes") && e.contains("expected 12292"),
        "{e}"
    );
    assert!(e.contains("multiple of 3073"), "{e}");
    // The right size, but a file with fewer records than expected.
    let e = err_text(cifar::read_batch(&path, 10_000));
    assert!(e.contains("expected 30730000"), "{e}");
    // A label out of range.
    let mut bytes = cifar_batch(4, 0);
    bytes[2 * 3073] = 10;
    std::fs::write(&path, &bytes).unwrap();
    let e = err_text(cifar::read_batch(&path, 4));
    assert!(e.contains("record 2 has label 10"), "{e}");
}

#[test]
fn cifar_downloads_checks_and_unpacks_from_a_local_server() {
    let archive = cifar_archive(3);
    let md5 = md5_hex(&archive);
    let half = archive.len() / 2;
    let base = serve(HashMap::from([
        ("/good.tar.gz".to_string(), Reply::Full(archive.clone())),
        ("/cut.tar.gz".to_string(), Reply::CutAfter(archive.clone(), half)),
    ]));
    let source = |path: &str, md5: &str| cifar::Source {
        url: format!("{base}{path}"),
        md5: md5.into(),
        records_per_file: 3,
    };

    // A wrong checksum leaves nothing behind, and says how to place the file by hand.
    let dir = tempfile::tempdir().unwrap();
    let e = err_text(cifar::load(dir.path(), &source("/good.tar.gz", &"0".repeat(32)), true));
    assert!(e.contains("md5") && e.contains(&md5) && e.contains("HINT"), "{e}");
    assert!(no_data(dir.path()), "left behind: {:?}", files_in(dir.path()));

    // A connection cut midway leaves nothing behind either.
    let e = err_text(cifar::load(dir.path(), &source("/cut.tar.gz", &md5), true));
    assert!(e.contains("cut.tar.gz"), "{e}");
    assert!(no_data(dir.path()), "left behind: {:?}", files_in(dir.path()));

    // A missing file (404) is an error naming the address.
    let e = err_text(cifar::load(dir.path(), &source("/missing.tar.gz", &md5), true));
    assert!(e.contains("missing.tar.gz") && e.contains("404"), "{e}");

    // Downloads off: an error with the hint, nothing fetched.
    let e = err_text(cifar::load(dir.path(), &source("/good.tar.gz", &md5), false));
    assert!(e.contains("downloads are off") && e.contains("HINT"), "{e}");

    // The good archive: downloaded under its name, unpacked, read.
    let (train, test, folder) = cifar::load(dir.path(), &source("/good.tar.gz", &md5), true).unwrap();
    assert_eq!(train.len(), 15);
    assert_eq!(test.len(), 3);
    assert_eq!(folder, dir.path().join("cifar-10-batches-bin"));
    assert_eq!(resnet_repro::data::download::md5_file(&dir.path().join(cifar::ARCHIVE)).unwrap(), md5);
    // data_batch_2 was written with seed 1: its first pixel is 1.
    assert_eq!(train.images.int64_value(&[3, 0, 0, 0]), 1);
    let names = files_in(dir.path());
    assert!(!names.iter().any(|n| n.ends_with(".part") || n.contains(".unpack")), "{names:?}");

    // Found in place the second time: no server needed.
    let (train, _, _) = cifar::load(dir.path(), &source("/nowhere", &md5), false).unwrap();
    assert_eq!(train.len(), 15);

    // An archive placed by hand but damaged is named, with the expected checksum.
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::write(dir2.path().join(cifar::ARCHIVE), &archive[..half]).unwrap();
    let e = err_text(cifar::load(dir2.path(), &source("/good.tar.gz", &md5), true));
    assert!(e.contains(cifar::ARCHIVE) && e.contains(&format!("expected {md5}")), "{e}");
}

/// Nothing in `dir` but lock files (which stay: removing a lock file races with its next user).
fn no_data(dir: &std::path::Path) -> bool {
    files_in(dir).iter().all(|n| n.ends_with(".lock"))
}

#[test]
fn concurrent_downloads_of_one_dataset_wait_for_each_other() {
    let archive = cifar_archive(3);
    let md5 = md5_hex(&archive);
    let base = serve(HashMap::from([("/good.tar.gz".to_string(), Reply::Full(archive))]));
    let source = cifar::Source { url: format!("{base}/good.tar.gz"), md5: md5.clone(), records_per_file: 3 };
    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        let loads: Vec<_> = (0..4).map(|_| s.spawn(|| cifar::load(dir.path(), &source, true))).collect();
        for l in loads {
            let (train, test, _) = l.join().unwrap().expect("every concurrent load succeeds");
            assert_eq!((train.len(), test.len()), (15, 3));
        }
    });
    assert_eq!(resnet_repro::data::download::md5_file(&dir.path().join(cifar::ARCHIVE)).unwrap(), md5);
    let names = files_in(dir.path());
    assert!(!names.iter().any(|n| n.ends_with(".part") || n.contains(".unpack")), "{names:?}");
}

fn fm_source(dirs: Vec<std::path::PathBuf>, base: &str, md5s: Option<Vec<String>>) -> fashion_mnist::Source {
    let mut s = fashion_mnist::Source {
        base_url: base.into(),
        system_dirs: dirs,
        counts: (20, 10),
        ..Default::default()
    };
    if let Some(m) = md5s {
        s.files = s.files.iter().zip(m).map(|((stem, _), m)| (stem.clone(), m)).collect();
    }
    s
}

#[test]
fn fashion_mnist_reads_gz_or_plain_files_from_the_data_folder_or_a_system_folder() {
    for gz in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        write_fashion_mnist(&dir.path().join("fashion-mnist"), 20, 10, gz);
        let (train, test, found) =
            fashion_mnist::load(dir.path(), &fm_source(vec![], "", None), false).unwrap();
        assert_eq!(found, dir.path().join("fashion-mnist"));
        assert_eq!(train.images.size(), [20, 1, 28, 28]);
        assert_eq!(test.images.size(), [10, 1, 28, 28]);
        assert_eq!(train.images.int64_value(&[7, 0, 2, 3]), 12);
        assert_eq!(Vec::<i64>::try_from(&test.labels).unwrap()[..3], [0, 1, 2]);
    }
    // Nothing in the data folder: the system folder (where Debian's package puts it) is used.
    let data = tempfile::tempdir().unwrap();
    let system = tempfile::tempdir().unwrap();
    write_fashion_mnist(system.path(), 20, 10, true);
    let (_, _, found) =
        fashion_mnist::load(data.path(), &fm_source(vec![system.path().into()], "", None), false).unwrap();
    assert_eq!(found, system.path());
    // Nowhere, downloads off: a hint naming the Debian package.
    let e = err_text(fashion_mnist::load(data.path(), &fm_source(vec![], "", None), false));
    assert!(e.contains("dataset-fashion-mnist"), "{e}");
}

#[test]
fn corrupted_fashion_mnist_files_are_errors_naming_the_file() {
    type Damage = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "bad magic",
            Box::new(|d| {
                let mut b = idx_images(20);
                b[3] = 0x04;
                std::fs::write(d.join("train-images-idx3-ubyte"), b).unwrap();
            }),
            "magic number 2052, expected 2051",
        ),
        (
            "truncated gzip",
            Box::new(|d| {
                let gz = gzip(&idx_images(20));
                std::fs::write(d.join("train-images-idx3-ubyte.gz"), &gz[..gz.len() - 20]).unwrap();
            }),
            "not a complete gzip file",
        ),
        (
            "fewer images than the header says",
            Box::new(|d| {
                let b = idx_images(20);
                std::fs::write(d.join("train-images-idx3-ubyte"), &b[..b.len() - 784]).unwrap();
            }),
            "expected 15696 for 20 images",
        ),
        (
            "wrong count",
            Box::new(|d| std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx_labels(9)).unwrap()),
            "header says 9 labels, expected 10",
        ),
        (
            "label out of range",
            Box::new(|d| {
                let mut b = idx_labels(10);
                b[8 + 4] = 11;
                std::fs::write(d.join("t10k-labels-idx1-ubyte"), b).unwrap();
            }),
            "label 4 is 11",
        ),
    ];
    for (what, damage, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let fm = dir.path().join("fashion-mnist");
        write_fashion_mnist(&fm, 20, 10, false);
        // Replace one file (the damaged one may be .gz: remove the plain file it would shadow).
        for f in std::fs::read_dir(&fm).unwrap() {
            let p = f.unwrap().path();
            if what == "truncated gzip" && p.file_name().unwrap() == "train-images-idx3-ubyte" {
                std::fs::remove_file(p).unwrap();
            }
        }
        damage(&fm);
        let e = err_text(fashion_mnist::load(dir.path(), &fm_source(vec![], "", None), false));
        assert!(e.contains(expected) && e.contains("idx"), "{what}: {e}");
    }
}

#[test]
fn fashion_mnist_downloads_with_md5_checks() {
    let files: Vec<(String, Vec<u8>)> = vec![
        ("/train-images-idx3-ubyte.gz".into(), gzip(&idx_images(20))),
        ("/train-labels-idx1-ubyte.gz".into(), gzip(&idx_labels(20))),
        ("/t10k-images-idx3-ubyte.gz".into(), gzip(&idx_images(10))),
        ("/t10k-labels-idx1-ubyte.gz".into(), gzip(&idx_labels(10))),
    ];
    let md5s: Vec<String> = files.iter().map(|(_, b)| md5_hex(b)).collect();
    let base = serve(files.into_iter().map(|(p, b)| (p, Reply::Full(b))).collect()) + "/";
    let dir = tempfile::tempdir().unwrap();
    // One wrong checksum: an error, and that file is not left in place.
    let mut wrong = md5s.clone();
    wrong[2] = "f".repeat(32);
    let e = err_text(fashion_mnist::load(dir.path(), &fm_source(vec![], &base, Some(wrong)), true));
    assert!(e.contains("t10k-images-idx3-ubyte.gz") && e.contains("md5"), "{e}");
    assert!(!dir.path().join("fashion-mnist/t10k-images-idx3-ubyte.gz").exists());
    let (train, test, _) =
        fashion_mnist::load(dir.path(), &fm_source(vec![], &base, Some(md5s)), true).unwrap();
    assert_eq!((train.len(), test.len()), (20, 10));
}

#[test]
fn prepared_data_subtracts_the_training_pixel_mean_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    write_fashion_mnist(&dir.path().join("fashion-mnist"), 20, 10, false);
    let mut opts = DataOptions::new(dir.path());
    opts.allow_download = false;
    opts.fashion_mnist = fm_source(vec![], "", None);
    let ds = Dataset::load(&DataConfig::downloadable(DatasetName::FashionMnist).unwrap(), &opts).unwrap();
    let p = Prepared::new(&ds, 5, Device::Cpu).unwrap();
    assert_eq!(p.train_len(), 15);
    assert_eq!(p.val.as_ref().unwrap().0.size(), [5, 1, 28, 28]);
    // Each pixel's mean over the 15 training images is zero after the subtraction (pixels in
    // [0, 1]: float32 rounding leaves ~1e-8; a mean not subtracted is at least 7/255).
    let m = p.train_x.mean_dim(0, false, Kind::Float).abs().max().double_value(&[]);
    assert!(m < 1e-6, "{m}");
    // Pixel (i, y, x) = (i + y + x) / 255; the mean at (0, 0) over i = 0..14 is 7 / 255.
    let expected = (ds.test.images.int64_value(&[0, 0, 0, 0]) as f64 - 7.0) / 255.0;
    assert!((p.test_x.double_value(&[0, 0, 0, 0]) - expected).abs() < 1e-6);
    let e = err_text(Prepared::new(&ds, 20, Device::Cpu));
    assert!(e.contains("val_split 20"), "{e}");
}

#[test]
fn augmentation_pads_with_zeros_crops_every_offset_and_flips_exactly() {
    let x = Tensor::arange(2 * 3 * 8 * 8, (Kind::Float, Device::Cpu)).view([2, 3, 8, 8]) + 1.0;
    let i64s = |v: &[i64]| Tensor::from_slice(v);
    let no = Tensor::from_slice(&[false, false]);
    // The centre offset without flip is the image itself.
    let same = pad_crop_flip(&x, 4, &i64s(&[4, 4]), &i64s(&[4, 4]), &no);
    assert!(same.equal(&x));
    // Offset (0, 0): the top-left 4 rows and columns are the zero padding.
    let corner = pad_crop_flip(&x, 4, &i64s(&[0, 0]), &i64s(&[0, 0]), &no);
    assert_eq!(corner.narrow(2, 0, 4).abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert_eq!(corner.narrow(3, 0, 4).abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert!(corner.narrow(2, 4, 4).narrow(3, 4, 4).equal(&x.narrow(2, 0, 4).narrow(3, 0, 4)));
    // Offsets apply per image; a flip mirrors exactly.
    let flip = Tensor::from_slice(&[true, false]);
    let mixed = pad_crop_flip(&x, 4, &i64s(&[4, 8]), &i64s(&[4, 8]), &flip);
    assert!(mixed.get(0).equal(&x.get(0).flip([2])));
    assert!(mixed.get(1).narrow(1, 0, 4).narrow(2, 0, 4).equal(&x.get(1).narrow(1, 4, 4).narrow(2, 4, 4)));
    assert_eq!(mixed.get(1).narrow(1, 4, 4).abs().sum(Kind::Float).double_value(&[]), 0.0);
}

#[test]
fn epoch_plans_are_seeded_permutations_reaching_every_offset() {
    let plan = EpochPlan::new(7, 0, 5000, 128, 4, true, Device::Cpu);
    assert_eq!(plan.batches(), 39);
    let order = Vec::<i64>::try_from(&plan.order).unwrap();
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 39 * 128, "no image twice in an epoch");
    for off in [&plan.offset_y, &plan.offset_x] {
        let v = Vec::<i64>::try_from(off).unwrap();
        for o in 0..=8 {
            assert!(v.contains(&o), "offset {o} never drawn");
        }
        assert!(v.iter().all(|o| (0..=8).contains(o)));
    }
    let flips = Vec::<bool>::try_from(&plan.flip).unwrap();
    let share = flips.iter().filter(|f| **f).count() as f64 / flips.len() as f64;
    assert!((0.45..0.55).contains(&share), "{share}");
    // Same (seed, epoch): same plan and same batch; another epoch or seed: another plan.
    let again = EpochPlan::new(7, 0, 5000, 128, 4, true, Device::Cpu);
    assert!(
        again.order.equal(&plan.order)
            && again.offset_x.equal(&plan.offset_x)
            && again.flip.equal(&plan.flip)
    );
    assert!(!EpochPlan::new(7, 1, 5000, 128, 4, true, Device::Cpu).order.equal(&plan.order));
    assert!(!EpochPlan::new(8, 0, 5000, 128, 4, true, Device::Cpu).order.equal(&plan.order));
    let images = Tensor::randn([5000, 3, 8, 8], (Kind::Float, Device::Cpu));
    let labels = Tensor::arange(5000, (Kind::Int64, Device::Cpu));
    let (xa, ya) = plan.batch(3, &images, &labels, 4);
    let (xb, yb) = again.batch(3, &images, &labels, 4);
    assert!(xa.equal(&xb) && ya.equal(&yb));
    assert_eq!(Vec::<i64>::try_from(&ya).unwrap(), order[3 * 128..4 * 128]);
    // Without augmentation every image comes through unchanged.
    let plain = EpochPlan::new(7, 0, 5000, 128, 4, false, Device::Cpu);
    let (x, y) = plain.batch(0, &images, &labels, 4);
    assert!(x.equal(&images.index_select(0, &y)));
}
