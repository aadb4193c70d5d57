//! The Table 6 summary and Figures 1 and 6, from fixture run folders written here; every
//! experiment file parsed strictly; the run store's walk.

mod common;

const CIFAR10: resnet_repro::data::Shape = resnet_repro::data::Shape { classes: 10, channels: 3, size: 32 };
const IMAGENET: resnet_repro::data::Shape =
    resnet_repro::data::Shape { classes: 1000, channels: 3, size: 224 };

use resnet_repro::data::DatasetName;
use resnet_repro::experiment::summary::{MeanStd, format_best_mean_std, mean_std, summarize, write_summary};
use resnet_repro::experiment::{Experiment, Preset, Store};
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::paper::Measure;
use resnet_repro::report::render_store;
use std::path::Path;

/// A finished (or, with `finished` false, unfinished) CIFAR run of the store in `out`.
fn fixture(
    out: &Path,
    dataset: DatasetName,
    preset: Preset,
    depth: usize,
    residual: bool,
    seed: u64,
    err: f64,
) {
    let s = resnet_repro::data::DataConfig::downloadable(dataset).unwrap().shape().unwrap();
    let net =
        CifarNet { depth, residual, in_channels: s.channels, image_size: s.size, ..CifarNet::resnet(depth) };
    common::fixture_run(out, dataset, preset, NetSpec::Cifar(net), seed, err, true);
}

#[test]
fn summary_reports_best_mean_std_beside_the_paper() {
    let MeanStd { mean: m, std: s } = mean_std(&[6.5, 6.7, 6.43, 6.8, 6.6]);
    assert!((m - 6.606).abs() < 1e-9 && (s - 0.148930).abs() < 1e-5, "{m} {s}");
    assert_eq!(format_best_mean_std(6.43, Some(MeanStd { mean: 6.61, std: 0.16 })), "6.43 (6.61±0.16)");
    assert_eq!(format_best_mean_std(8.75, None), "8.75");

    let out = tempfile::tempdir().unwrap();
    for (seed, e) in [6.5, 6.7, 6.43, 6.8, 6.6].into_iter().enumerate() {
        fixture(out.path(), DatasetName::Cifar10, Preset::Full, 110, true, seed as u64, e);
    }
    fixture(out.path(), DatasetName::Cifar10, Preset::Full, 20, true, 0, 8.51);
    fixture(out.path(), DatasetName::Cifar10, Preset::Full, 20, false, 0, 9.9);
    fixture(out.path(), DatasetName::FashionMnist, Preset::Quick, 20, true, 0, 30.0);
    // An unfinished run (no final.json) is not summarised.
    common::fixture_run(
        out.path(),
        DatasetName::Cifar10,
        Preset::Full,
        NetSpec::Cifar(CifarNet::resnet(56)),
        0,
        7.0,
        false,
    );
    let store = Store::new(out.path());

    let rows = summarize(&store.runs().unwrap()).unwrap();
    let names: Vec<(String, String)> = rows.iter().map(|r| (r.group.to_string(), r.net.clone())).collect();
    let expect = [
        ("cifar10", "plain20"),
        ("cifar10", "resnet20"),
        ("cifar10", "resnet110"),
        ("fashion-mnist-quick", "resnet20"),
    ];
    assert_eq!(names, expect.map(|(g, n)| (g.to_string(), n.to_string())));
    let r110 = &rows[2];
    assert_eq!(r110.seeds, 5);
    assert!(rows.iter().all(|r| r.measure == Measure::Test && r.top5.is_none()));
    assert_eq!(r110.errors, "6.50;6.70;6.43;6.80;6.60");
    assert_eq!(r110.ours, "6.43 (6.61±0.15)");
    assert_eq!(r110.paper, "6.43 (6.61±0.16)");
    assert!(r110.diff.unwrap().abs() < 1e-9);
    assert!((rows[1].diff.unwrap() - (8.51 - 8.75)).abs() < 1e-9);
    assert_eq!(rows[0].paper, "", "no plain-net numbers in Table 6");
    assert_eq!(rows[3].diff, None, "Fashion-MNIST is not comparable with the paper");

    let md = write_summary(&store, "Table 6").unwrap();
    assert!(md.contains("| ResNet-110 | test | 5 | 6.43 (6.61±0.15) | 6.43 (6.61±0.16) | +0.00 | 10000 | 64000 | 20m 34s | cuda:0 |"), "{md}");
    assert!(md.contains("| plain-20 | test | 1 | 9.90 | - |  |"), "{md}");
    assert!(
        md.contains("## fashion-mnist-quick\n\nFashion-MNIST, quick preset: **not a reproduction**"),
        "{md}"
    );
    assert!(
        md.contains("| ResNet-20 | test | 1 | 30.00 | 8.75 |  |"),
        "the paper's figure for reference, no diff:\n{md}"
    );
    assert!(!md.contains("top-5"), "no top-5 columns for CIFAR:\n{md}");
    // The deviations come from the runs' configurations: Table 6's batch of 128 on one device.
    assert!(
        md.contains("- BN statistics over the whole batch of 128 on one device (the paper: 64 per GPU"),
        "{md}"
    );
    assert!(md.contains("fan-in"), "{md}");
    let csv = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
    assert!(
        csv.starts_with("group,net,label,depth,residual,measure,seeds,errors,best,mean,std,ours,top5,paper,"),
        "{csv}"
    );
    assert!(csv.contains("\ncifar10,resnet110,ResNet-110,110,true,test,5,"), "{csv}");
    assert_eq!(csv.lines().count(), 5);
}

/// Pixels of exactly this colour in a PNG.
fn count_color(img: &image::RgbImage, rgb: [u8; 3]) -> usize {
    img.pixels().filter(|p| p.0 == rgb).count()
}

#[test]
fn figures_are_drawn_from_the_csvs_alone() {
    let out = tempfile::tempdir().unwrap();
    for (depth, res, e) in
        [(20, false, 9.5), (56, false, 12.0), (20, true, 8.6), (56, true, 7.0), (110, true, 6.5)]
    {
        fixture(out.path(), DatasetName::Cifar10, Preset::Full, depth, res, 0, e);
    }
    let plots = tempfile::tempdir().unwrap();
    let written = render_store(&Store::new(out.path()), plots.path()).unwrap();
    let names: Vec<String> =
        written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["fig1_cifar10.png", "fig6_cifar10.png"]);
    let fig6 = image::open(&written[1]).unwrap().to_rgb8();
    assert_eq!(fig6.dimensions(), (1800, 560));
    let non_white = fig6.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(non_white > 20_000, "fig6 is nearly blank: {non_white} non-white pixels");
    // Each depth's colour is drawn, in the panels that show it.
    let rgb = |d: usize| {
        let c = resnet_repro::report::figures::color(d);
        [c.0, c.1, c.2]
    };
    for depth in [20, 56] {
        assert!(
            count_color(&fig6, rgb(depth)) > 500,
            "depth {depth}: {} pixels",
            count_color(&fig6, rgb(depth))
        );
    }
    // Depth 56 is in the left (plain) and middle (ResNet) panels, not in the right (110 vs 1202).
    let blue = |x0: u32, x1: u32| {
        fig6.enumerate_pixels().filter(|(x, _, p)| (x0..x1).contains(x) && p.0 == rgb(56)).count()
    };
    assert!(blue(0, 600) > 300 && blue(600, 1200) > 300, "{} {}", blue(0, 600), blue(600, 1200));
    assert_eq!(blue(1200, 1800), 0);
    let fig1 = image::open(&written[0]).unwrap().to_rgb8();
    assert_eq!(fig1.dimensions(), (1400, 560));
    assert!(count_color(&fig1, rgb(20)) > 300 && count_color(&fig1, rgb(56)) > 300);
}

#[test]
fn every_experiment_file_parses_strictly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("experiments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for f in &files {
        // The detection experiments have their own formats (and loaders, as strict).
        let name = f.file_name().unwrap().to_string_lossy();
        if name == "detect_scenes.toml" {
            resnet_repro::experiment::detect_scenes::SceneExperiment::load(f).unwrap();
            continue;
        }
        if name.starts_with("table7_voc") || name.starts_with("table8_coco") {
            resnet_repro::experiment::detect_paper::PaperDetection::load(f).unwrap();
            continue;
        }
        let exp = Experiment::from_file(f).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        let runs = exp.resolve(exp.data.shape().unwrap_or(IMAGENET)).unwrap();
        assert!(!runs.is_empty());
        let imagenet = exp.data.dataset() == DatasetName::ImageNet;
        assert_eq!(imagenet, f.to_string_lossy().contains("imagenet"), "{}", f.display());
        assert!(runs.iter().all(|r| matches!(r.net, NetSpec::ImageNet(_)) == imagenet));
    }
    let table6 = Experiment::from_file(&root.join("experiments/table6_cifar10.toml")).unwrap();
    let runs = table6.resolve(CIFAR10).unwrap();
    assert_eq!(runs.len(), 5 + 4 + 5, "plain 20..110, ResNet 20..56, ResNet-110 x 5 seeds");
    let r110: Vec<_> = runs.iter().filter(|r| r.net.name() == "resnet110").collect();
    assert!(
        r110.iter().all(|r| r
            .train
            .warmup
            .as_ref()
            .is_some_and(|w| w.lr == 0.01 && w.until_train_error_below == 80.0))
    );
    assert!(runs.iter().filter(|r| r.net.name() != "resnet110").all(|r| r.train.warmup.is_none()));
    assert_eq!(
        (runs[0].train.milestones.as_slice(), runs[0].train.iterations),
        ([32_000, 48_000].as_slice(), 64_000)
    );
    let quick = Experiment::from_file(&root.join("experiments/quick.toml")).unwrap();
    assert_eq!(quick.preset, Preset::Quick);
    let t2 = Experiment::from_file(&root.join("experiments/table2_imagenet.toml")).unwrap();
    let r = &t2.resolve(IMAGENET).unwrap()[0];
    assert_eq!((r.train.batch_size, r.train.iterations, r.train.log_every), (256, 600_000, 200));
}

#[test]
fn bad_experiment_files_are_errors_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |text: &str| {
        let p = dir.path().join("x.toml");
        std::fs::write(&p, text).unwrap();
        format!("{:#}", Experiment::from_file(&p).unwrap_err())
    };
    let train = "[train]\nbatch_size = 128\nlr = 0.1\nmilestones = []\niterations = 100\nlog_every = 10\n\
                 eval_every = 50\ncheckpoint_every = 50\n";
    let runs = "[[runs]]\ndepth = 20\nresidual = true\n";
    let base = format!("name = \"x\"\n[data]\ndataset = \"cifar10\"\n{train}{runs}");
    Experiment::from_file(&{
        let p = dir.path().join("ok.toml");
        std::fs::write(&p, &base).unwrap();
        p
    })
    .unwrap();
    let e = bad(&base.replace("lr = 0.1", "lr = 0.1\nlearning_rate = 0.1"));
    assert!(e.contains("x.toml") && e.contains("learning_rate"), "{e}");
    let e = bad(&base.replace("depth = 20", "depth = 21"));
    assert!(e.contains("x.toml") && e.contains("depth 21"), "{e}");
    let e = bad(&base.replace("cifar10", "mnist"));
    assert!(e.contains("mnist"), "{e}");
    let e = bad(&base.replace("eval_every = 50", "eval_every = 15"));
    assert!(e.contains("eval_every (15)"), "{e}");
    // A schedule key left out is an error, not a silent default of another family's recipe.
    for key in ["iterations = 100\n", "milestones = []\n", "batch_size = 128\n", "log_every = 10\n"] {
        let e = bad(&base.replace(key, ""));
        assert!(e.contains(&format!("missing field `{}`", key.split(' ').next().unwrap())), "{e}");
    }
    let imagenet = base
        .replace("dataset = \"cifar10\"", "dataset = \"imagenet\"\nfinal_protocols = [\"ten-crop\"]")
        .replace("depth = 20", "depth = 18");
    Experiment::from_file(&{
        let p = dir.path().join("in.toml");
        std::fs::write(&p, &imagenet).unwrap();
        p
    })
    .unwrap();
    // The options of one family are not the other's.
    let e = bad(&imagenet.replace("final_protocols", "pad = 4\nfinal_protocols"));
    assert!(e.contains("pad"), "{e}");
    let e = bad(&base.replace("residual = true", "residual = true\nbottleneck_stride = \"1x1\""));
    assert!(e.contains("bottleneck_stride"), "{e}");
    // The plateau rule needs a validation split: the test set must never select anything.
    let e = bad(&base.replace("[[runs]]", "[train.plateau]\npatience = 3\n[[runs]]"));
    assert!(e.contains("plateau needs a validation set"), "{e}");
    let ok = base.replace("dataset = \"cifar10\"", "dataset = \"cifar10\"\nval_split = 5000");
    std::fs::write(
        dir.path().join("v.toml"),
        ok.replace("[[runs]]", "[train.plateau]\npatience = 3\n[[runs]]"),
    )
    .unwrap();
    Experiment::from_file(&dir.path().join("v.toml")).unwrap();
    // The init's n is a choice of the file, carried into every network and into the deviations.
    let fan_out = base.replace("name = \"x\"", "name = \"x\"\ninit = \"fan_out\"");
    std::fs::write(dir.path().join("f.toml"), &fan_out).unwrap();
    let runs = Experiment::from_file(&dir.path().join("f.toml")).unwrap().resolve(CIFAR10).unwrap();
    assert!(runs.iter().all(|r| r.net.init() == resnet_repro::models::HeInit::FanOut));
    let said = resnet_repro::experiment::summary::deviations(runs.iter().map(|r| (r, 1)));
    assert!(said.iter().any(|d| d.starts_with("convs are He-normal with n = k²·c_out")), "{said:?}");
    let e = bad(&base.replace("name = \"x\"", "name = \"x\"\ninit = \"fan\""));
    assert!(e.contains("fan_in") && e.contains("fan_out"), "{e}");
    let e = format!("{:#}", Experiment::from_file(&dir.path().join("missing.toml")).unwrap_err());
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn the_store_walks_runs_in_the_paper_s_order_and_names_groups() {
    let out = tempfile::tempdir().unwrap();
    for (depth, residual) in [(56, true), (20, true), (110, true), (56, false), (20, false)] {
        fixture(out.path(), DatasetName::Cifar10, Preset::Full, depth, residual, 0, 9.0);
    }
    fixture(out.path(), DatasetName::FashionMnist, Preset::Quick, 20, true, 1, 30.0);
    // Something the store did not write is not a run.
    std::fs::create_dir_all(out.path().join("not-a-group/resnet20/seed0")).unwrap();
    let store = Store::new(out.path());
    let names: Vec<String> = store
        .runs()
        .unwrap()
        .iter()
        .map(|r| r.dir.path.strip_prefix(out.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "cifar10/plain20/seed0",
            "cifar10/plain56/seed0",
            "cifar10/resnet20/seed0",
            "cifar10/resnet56/seed0",
            "cifar10/resnet110/seed0",
            "fashion-mnist-quick/resnet20/seed1"
        ]
    );
    let groups: Vec<String> = store.groups().unwrap().iter().map(|(g, _)| g.to_string()).collect();
    assert_eq!(groups, ["cifar10", "fashion-mnist-quick"]);
}

#[test]
fn the_paper_s_numbers_are_keyed_by_network_and_protocol() {
    use resnet_repro::models::{ImageNetNet, Shortcut};
    use resnet_repro::paper::published;
    let r110 = published(&NetSpec::Cifar(CifarNet::resnet(110)), Measure::Test).unwrap();
    assert_eq!((r110.top1, r110.top5, r110.mean_std), (6.43, None, Some(MeanStd { mean: 6.61, std: 0.16 })));
    assert_eq!(published(&NetSpec::Cifar(CifarNet::resnet(20)), Measure::Test).unwrap().top1, 8.75);
    assert!(published(&NetSpec::Cifar(CifarNet::plain(20)), Measure::Test).is_none(), "Figure 6 only");
    let imagenet = |depth, s| NetSpec::ImageNet(ImageNetNet::resnet(depth, s));
    let t3 = published(&imagenet(34, Shortcut::C), Measure::TenCrop).unwrap();
    assert_eq!((t3.top1, t3.top5), (24.19, Some(7.40)));
    let t4 = published(&imagenet(152, Shortcut::B), Measure::MultiScale).unwrap();
    assert_eq!((t4.top1, t4.top5), (19.38, Some(4.49)));
    assert_eq!(published(&NetSpec::ImageNet(ImageNetNet::plain(18)), Measure::TenCrop).unwrap().top1, 27.94);
    assert!(published(&imagenet(34, Shortcut::A), Measure::MultiScale).is_none(), "not in Table 4");
    assert!(published(&imagenet(50, Shortcut::B), Measure::Center).is_none(), "no centre-crop table");
    assert!(published(&NetSpec::Cifar(CifarNet::resnet(20)), Measure::TenCrop).is_none());
}

#[test]
fn groups_are_a_dataset_and_a_preset() {
    use resnet_repro::experiment::Group;
    for name in ["cifar10", "fashion-mnist-quick", "imagenet", "imagenet-quick"] {
        let g: Group = name.parse().unwrap();
        assert_eq!(g.to_string(), name);
    }
    let g: Group = "fashion-mnist-quick".parse().unwrap();
    assert_eq!((g.dataset, g.preset), (DatasetName::FashionMnist, Preset::Quick));
    assert!(!g.comparable());
    assert!("cifar10".parse::<Group>().unwrap().comparable());
    assert!("fashion-mnist".parse::<Group>().is_ok_and(|g| !g.comparable()));
    assert!("mnist-quick".parse::<Group>().is_err());
}

#[test]
fn bn_is_a_deviation_only_where_its_batch_is_not_the_papers() {
    let table6 = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/table6_cifar10.toml");
    let mut runs = Experiment::from_file(&table6).unwrap().resolve(CIFAR10).unwrap();
    runs.truncate(1);
    let bn = |runs: &[resnet_repro::experiment::RunConfig], replicas: usize| -> Vec<String> {
        let said = resnet_repro::experiment::summary::deviations(runs.iter().map(|r| (r, replicas)));
        said.into_iter().filter(|d| d.starts_with("BN statistics")).collect()
    };
    assert_eq!(
        bn(&runs, 1),
        ["BN statistics over the whole batch of 128 on one device (the paper: 64 per GPU on two GPUs)"]
    );
    assert!(bn(&runs, 2).is_empty(), "2 replicas of 64 are the paper's");
    assert_eq!(
        bn(&runs, 4),
        ["BN statistics over 32 images per replica on 4 replicas (the paper: 64 per GPU on two GPUs)"]
    );
    runs[0].train.bn_batch = Some(64);
    assert!(bn(&runs, 1).is_empty(), "bn_batch = 64 on one device is the paper's");
    runs[0].train.bn_batch = Some(32);
    assert_eq!(
        bn(&runs, 1),
        ["BN statistics over groups of 32 images (bn_batch) (the paper: 64 per GPU on two GPUs)"]
    );
}

#[test]
fn bf16_is_recorded_in_the_config_and_said_as_a_deviation() {
    let table6 = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/table6_cifar10.toml");
    let mut runs = Experiment::from_file(&table6).unwrap().resolve(CIFAR10).unwrap();
    runs.truncate(1);
    let said = |runs: &[resnet_repro::experiment::RunConfig]| -> Vec<String> {
        let all = resnet_repro::experiment::summary::deviations(runs.iter().map(|r| (r, 2)));
        all.into_iter().filter(|d| d.contains("autocast")).collect()
    };
    assert!(said(&runs).is_empty(), "fp32 is the paper's");
    assert!(runs[0].to_toml().unwrap().contains("precision = \"fp32\""));
    runs[0].train.precision = resnet_repro::train::Precision::Bf16;
    assert_eq!(said(&runs), ["the training forward pass in bf16 autocast (the paper: fp32)"]);
    let text = runs[0].to_toml().unwrap();
    assert!(text.contains("precision = \"bf16\""), "{text}");
    let back: resnet_repro::experiment::RunConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, runs[0]);
    // A config written before precision existed reads as fp32.
    let old = text.replace("precision = \"bf16\"\n", "");
    let read: resnet_repro::experiment::RunConfig = toml::from_str(&old).unwrap();
    assert_eq!(read.train.precision, resnet_repro::train::Precision::Fp32);
}

#[test]
fn an_expected_error_prints_its_hint_without_a_backtrace_even_with_rust_backtrace_set() {
    // CIFAR-10 absent and downloads off: an expected error, not a bug.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cifar_depth_sweep"))
        .args(["--quick", "--no-download", "--device", "cpu", "--only", "resnet20"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(dir.path().join("runs"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Error: ") && err.contains("HINT: download"), "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "a backtrace for an expected error:\n{err}");
    // The same for a binary that used to return its error from main (Rust's own printing).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .arg("--weights")
        .arg(dir.path().join("no-such-run"))
        .arg("--val-dir")
        .arg(dir.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("Error: ") && !err.to_lowercase().contains("backtrace"), "{err}");
}
