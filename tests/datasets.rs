//! CIFAR-100 (downloaded from a local server in its binary format, both label kinds, the nets'
//! fc sized from it) and small-image folders for the CIFAR nets (class per folder, any size,
//! grey or colour, trained end to end), on files the tests write.

mod common;

use common::*;
use resnet_repro::data::cifar100::{self, Labels};
use resnet_repro::data::{DataConfig, DataOptions, Dataset, DatasetName, small_folder};
use std::collections::HashMap;
use std::path::Path;

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn cifar100_downloads_with_its_md5_and_reads_fine_or_coarse_labels() {
    let archive = cifar100_archive(30, 10);
    let md5 = md5_hex(&archive);
    let base = serve(HashMap::from([("/c100.tar.gz".to_string(), Reply::Full(archive.clone()))]));
    let source = |md5: &str| cifar100::Source {
        url: format!("{base}/c100.tar.gz"),
        md5: md5.into(),
        records: (30, 10),
    };
    let dir = tempfile::tempdir().unwrap();
    // A wrong checksum is refused with the hint; nothing is left that looks valid.
    let e = err_text(cifar100::load(dir.path(), &source(&"0".repeat(32)), Labels::Fine, true));
    assert!(
        e.contains("md5") && e.contains(&md5) && e.contains("HINT") && e.contains("cifar-100-binary"),
        "{e}"
    );
    assert!(!dir.path().join("cifar-100-binary").exists());
    // Downloads off: CIFAR-100 named.
    let e = err_text(cifar100::load(dir.path(), &source(&md5), Labels::Fine, false));
    assert!(e.contains("CIFAR-100 not found") && e.contains("downloads are off"), "{e}");
    let (train, test, folder, names) = cifar100::load(dir.path(), &source(&md5), Labels::Fine, true).unwrap();
    assert_eq!((train.len(), test.len()), (30, 10));
    assert_eq!(folder, dir.path().join("cifar-100-binary"));
    assert_eq!(train.images.size(), [30, 3, 32, 32]);
    assert_eq!(Vec::<i64>::try_from(&train.labels.narrow(0, 0, 4)).unwrap(), [0, 7, 14, 21]);
    assert_eq!((names.len(), names[7].as_str()), (100, "fine_07"));
    // The same records' coarse labels, found in place this time.
    let (train, _, _, names) = cifar100::load(dir.path(), &source("unused"), Labels::Coarse, false).unwrap();
    assert_eq!(Vec::<i64>::try_from(&train.labels.narrow(0, 19, 3)).unwrap(), [19, 0, 1]);
    assert_eq!((names.len(), names[1].as_str()), (20, "coarse_01"));
    // A label out of range and a truncated file are errors naming the file.
    let f = dir.path().join("cifar-100-binary/test.bin");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[3074 + 1] = 100;
    std::fs::write(&f, &bytes).unwrap();
    let e = err_text(cifar100::read_file(&f, 10, Labels::Fine));
    assert!(e.contains("test.bin: record 1 has fine label 100"), "{e}");
    std::fs::write(&f, &bytes[..3000]).unwrap();
    let e = err_text(cifar100::read_file(&f, 10, Labels::Fine));
    assert!(e.contains("test.bin: 3000 bytes") && e.contains("not even a multiple of 3074"), "{e}");
}

#[test]
fn a_cifar100_experiment_sizes_the_nets_fc_from_its_labels() {
    let text = |labels: &str| {
        format!(
            "name = \"c\"\npreset = \"quick\"\nseeds = [0]\n[data]\ndataset = \"cifar100\"\n{labels}\n[train]\n\
             batch_size = 8\nlr = 0.1\nmilestones = []\niterations = 2\nlog_every = 1\neval_every = 1\n\
             checkpoint_every = 1\n[[runs]]\ndepth = 20\nresidual = true\n"
        )
    };
    for (labels, classes) in [("", 100), ("labels = \"fine\"", 100), ("labels = \"coarse\"", 20)] {
        let exp: resnet_repro::experiment::Experiment = toml::from_str(&text(labels)).unwrap();
        exp.validate().unwrap();
        let run = &exp.resolve(exp.data.shape().unwrap()).unwrap()[0];
        let resnet_repro::models::NetSpec::Cifar(net) = &run.net else { panic!() };
        assert_eq!((net.num_classes, net.in_channels, net.image_size), (classes, 3, 32), "{labels}");
    }
    // labels belongs to CIFAR-100 only.
    let bad = text("labels = \"coarse\"").replace("cifar100", "cifar10");
    let exp: resnet_repro::experiment::Experiment = toml::from_str(&bad).unwrap();
    assert!(format!("{:#}", exp.validate().unwrap_err()).contains("data.labels is for cifar100"));
    // --dataset cifar100 on the Table 6 file.
    let d =
        DataConfig::downloadable(DatasetName::Cifar10).unwrap().with_dataset(DatasetName::Cifar100).unwrap();
    assert_eq!(d.shape().unwrap().classes, 100);
}

/// A class-per-folder tree under `root`: classes `ant` (grey, 20x14) and `bee` (colour when
/// `colour`, else grey, 9x31), `n` training and 2 test images each, as PNG and JPEG.
fn write_small_folder(root: &Path, n: usize, colour: bool) {
    for (split, count) in [("train", n), ("test", 2)] {
        for i in 0..count {
            let ant =
                image::GrayImage::from_fn(20, 14, |x, y| image::Luma([(x * 9 + y * 5 + i as u32 * 3) as u8]));
            let d = root.join(split).join("ant");
            std::fs::create_dir_all(&d).unwrap();
            ant.save(d.join(format!("a{i}.png"))).unwrap();
            let d = root.join(split).join("bee");
            std::fs::create_dir_all(&d).unwrap();
            let bee = image::RgbImage::from_fn(9, 31, |x, y| {
                image::Rgb([200, (x * 20) as u8, (y * 8 + i as u32) as u8])
            });
            if colour {
                bee.save(d.join(format!("b{i}.jpg"))).unwrap();
            } else {
                image::DynamicImage::ImageRgb8(bee).to_luma8().save(d.join(format!("b{i}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn a_small_image_folder_is_resized_centre_cropped_and_gets_its_channels_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    write_small_folder(&dir.path().join("colour"), 3, true);
    write_small_folder(&dir.path().join("grey"), 3, false);
    let f = small_folder::load(&dir.path().join("colour"), 16).unwrap();
    assert_eq!(f.classes, ["ant", "bee"]);
    assert_eq!((f.train.images.size(), f.test.images.size()), (vec![6, 3, 16, 16], vec![4, 3, 16, 16]));
    assert_eq!(Vec::<i64>::try_from(&f.train.labels).unwrap(), [0, 0, 0, 1, 1, 1]);
    // A grey image in a colour set: its three channels equal.
    let ant = f.train.images.get(0);
    assert!(ant.get(0).equal(&ant.get(1)) && ant.get(1).equal(&ant.get(2)));
    let g = small_folder::load(&dir.path().join("grey"), 16).unwrap();
    assert_eq!(g.train.images.size(), [6, 1, 16, 16], "every file grey: one channel");
    // The centre crop of the resized image: a 20x14 image becomes 22x16 (shorter side 16), of
    // which the middle 16 columns are kept; its grey ramp still rises to the right.
    let row = Vec::<u8>::try_from(&g.train.images.get(0).get(0).get(8)).unwrap();
    assert!(row.windows(2).all(|w| w[0] <= w[1]) && row[15] > row[0], "{row:?}");
    // Errors name the file or the folder.
    std::fs::write(dir.path().join("grey/train/ant/broken.png"), b"not a png").unwrap();
    let e = err_text(small_folder::load(&dir.path().join("grey"), 16));
    assert!(e.contains("broken.png"), "{e}");
    std::fs::remove_dir_all(dir.path().join("grey/test")).unwrap();
    let e = err_text(small_folder::load(&dir.path().join("grey"), 16));
    assert!(e.contains("neither test/ nor val/"), "{e}");
    let e = err_text(small_folder::load(&dir.path().join("none"), 16));
    assert!(e.contains("none: not a folder"), "{e}");
}

#[test]
fn a_folder_experiment_trains_a_cifar_net_sized_from_the_files_and_stores_their_mean() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    write_small_folder(&dir.path().join("data/bugs"), 8, true);
    let text = "name = \"bugs\"\npreset = \"quick\"\nseeds = [0]\n[data]\ndataset = \"folder\"\npath = \"bugs\"\n\
                image_size = 16\neval_batch_size = 4\n[train]\nbatch_size = 8\nlr = 0.1\nmilestones = []\n\
                iterations = 4\nlog_every = 2\neval_every = 2\ncheckpoint_every = 2\n[[runs]]\ndepth = 8\nresidual = true\n";
    let exp: resnet_repro::experiment::Experiment = toml::from_str(text).unwrap();
    exp.validate().unwrap();
    let opts = runner_over(&dir.path().join("data"), &dir.path().join("runs"), (0, 0));
    let out = resnet_repro::experiment::run_experiment(&exp, &opts).unwrap();
    assert_eq!(out.len(), 1);
    let resnet_repro::models::NetSpec::Cifar(net) = &out[0].run.net else { panic!() };
    assert_eq!((net.num_classes, net.in_channels, net.image_size), (2, 3, 16));
    let run = opts.store.run(&out[0].run);
    assert!(run.is_finished());
    assert_eq!(run.class_names().unwrap().unwrap(), ["ant", "bee"]);
    // The stored mean is the training images' per-pixel mean.
    let mean = tch::Tensor::read_safetensors(run.data_mean()).unwrap().remove(0).1;
    let ds = Dataset::load(&exp.data, &DataOptions::new(dir.path().join("data"))).unwrap();
    let want = ds.train.images.to_kind(tch::Kind::Float).mean_dim(0, true, tch::Kind::Float) / 255.0;
    assert_eq!(mean.size(), [1, 3, 16, 16]);
    assert!(mean.allclose(&want, 1e-6, 1e-7, false));
    // path and image_size belong to folders only, and a folder needs its path.
    let no_path = text.replace("path = \"bugs\"\n", "");
    let e: resnet_repro::experiment::Experiment = toml::from_str(&no_path).unwrap();
    assert!(format!("{:#}", e.validate().unwrap_err()).contains("data.path names the folder"));
    let cifar: DataConfig = toml::from_str("dataset = \"cifar10\"\nimage_size = 16\n").unwrap();
    assert!(
        format!("{:#}", cifar.validate().unwrap_err()).contains("image_size is for dataset = \"folder\"")
    );
}
