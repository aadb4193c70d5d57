//! The Table 6 summary and Figures 1 and 6, from fixture run folders written here.

use resnet_repro::config::{ExperimentConfig, Preset, RunConfig, TrainConfig};
use resnet_repro::data::DatasetName;
use resnet_repro::experiment::{format_best_mean_std, mean_std, summarize, write_summary};
use resnet_repro::metrics::{FinalRecord, MetricsRow, MetricsWriter};
use resnet_repro::models::CifarNet;
use resnet_repro::plot::render_table6_figures;
use std::path::Path;

/// A finished run folder: config.toml, metrics.csv (error curves falling to `final_err`) and final.json.
fn fixture(
    out: &Path,
    dataset: DatasetName,
    preset: Preset,
    depth: usize,
    residual: bool,
    seed: u64,
    final_err: f64,
) {
    let (c, size) = dataset.shape();
    let net = CifarNet { depth, residual, in_channels: c, image_size: size, ..CifarNet::resnet(depth) };
    let cfg = RunConfig { experiment: "t".into(), preset, dataset, seed, net, train: TrainConfig::default() };
    let dir = cfg.dir(out);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), cfg.to_toml().unwrap()).unwrap();
    let mut w = MetricsWriter::create(&dir.join("metrics.csv")).unwrap();
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
    FinalRecord {
        net: cfg.net.name(),
        depth,
        residual,
        dataset: dataset.to_string(),
        preset: preset.to_string(),
        seed,
        iterations: 64_000,
        test_error: Some(final_err),
        test_images: 10_000,
        val_error: None,
        val_top5_error: None,
        skipped_images: 0,
        train_error: final_err - 3.0,
        seconds: 3600.0,
        device: "cuda:0".into(),
        torch: "2.11.0".into(),
        commit: "abc".into(),
        warmup_ended_at: None,
        finished: "2026-11-27T00:00:00Z".into(),
    }
    .write(&dir.join("final.json"))
    .unwrap();
}

#[test]
fn summary_reports_best_mean_std_beside_the_paper() {
    let (m, s) = mean_std(&[6.5, 6.7, 6.43, 6.8, 6.6]);
    assert!((m - 6.606).abs() < 1e-9 && (s - 0.148930).abs() < 1e-5, "{m} {s}");
    assert_eq!(format_best_mean_std(6.43, Some((6.61, 0.16))), "6.43 (6.61±0.16)");
    assert_eq!(format_best_mean_std(8.75, None), "8.75");

    let out = tempfile::tempdir().unwrap();
    for (seed, e) in [6.5, 6.7, 6.43, 6.8, 6.6].into_iter().enumerate() {
        fixture(out.path(), DatasetName::Cifar10, Preset::Full, 110, true, seed as u64, e);
    }
    fixture(out.path(), DatasetName::Cifar10, Preset::Full, 20, true, 0, 8.51);
    fixture(out.path(), DatasetName::Cifar10, Preset::Full, 20, false, 0, 9.9);
    fixture(out.path(), DatasetName::FashionMnist, Preset::Quick, 20, true, 0, 30.0);
    // An unfinished run (no final.json) is not summarised.
    std::fs::create_dir_all(out.path().join("cifar10/resnet56/seed0")).unwrap();

    let rows = summarize(out.path()).unwrap();
    let names: Vec<(String, String)> = rows.iter().map(|r| (r.group.clone(), r.net.clone())).collect();
    let expect = [
        ("cifar10", "plain20"),
        ("cifar10", "resnet20"),
        ("cifar10", "resnet110"),
        ("fashion-mnist-quick", "resnet20"),
    ];
    assert_eq!(names, expect.map(|(g, n)| (g.to_string(), n.to_string())));
    let r110 = &rows[2];
    assert_eq!(r110.seeds, 5);
    assert_eq!(r110.test_errors, "6.50;6.70;6.43;6.80;6.60");
    assert_eq!(r110.ours, "6.43 (6.61±0.15)");
    assert_eq!(r110.paper, "6.43 (6.61±0.16)");
    assert!(r110.diff.unwrap().abs() < 1e-9);
    assert!((rows[1].diff.unwrap() - (8.51 - 8.75)).abs() < 1e-9);
    assert_eq!(rows[0].paper, "", "no plain-net numbers in Table 6");
    assert_eq!(rows[3].diff, None, "Fashion-MNIST is not comparable with the paper");

    let md = write_summary(out.path(), &rows).unwrap();
    assert!(md.contains("| ResNet-110 | 110 | 5 | 6.43 (6.61±0.15) | 6.43 (6.61±0.16) | +0.00 |"), "{md}");
    assert!(md.contains("## fashion-mnist-quick") && md.contains("not a reproduction"), "{md}");
    let csv = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
    assert!(
        csv.starts_with(
            "group,dataset,preset,net,depth,residual,seeds,test_errors,best,mean,std,ours,paper,diff,"
        ),
        "{csv}"
    );
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
    let written = render_table6_figures(out.path(), plots.path()).unwrap();
    let names: Vec<String> =
        written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["fig1_cifar10.png", "fig6_cifar10.png"]);
    let fig6 = image::open(&written[1]).unwrap().to_rgb8();
    assert_eq!(fig6.dimensions(), (1800, 560));
    let non_white = fig6.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(non_white > 20_000, "fig6 is nearly blank: {non_white} non-white pixels");
    // Each depth's colour is drawn, in the panels that show it.
    let rgb = |d: usize| {
        let c = resnet_repro::plot::color(d);
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
fn experiment_files_parse_strictly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in
        ["experiments/table6_cifar10.toml", "experiments/table6_resnet1202.toml", "experiments/quick.toml"]
    {
        let cfg = ExperimentConfig::from_file(&root.join(f)).unwrap_or_else(|e| panic!("{f}: {e:#}"));
        assert!(!cfg.resolve().is_empty());
    }
    let table6 = ExperimentConfig::from_file(&root.join("experiments/table6_cifar10.toml")).unwrap();
    let runs = table6.resolve();
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
    assert_eq!(runs[0].train.milestones, [32_000, 48_000]);
    assert_eq!(runs[0].train.iterations, 64_000);
    let quick = ExperimentConfig::from_file(&root.join("experiments/quick.toml")).unwrap();
    assert_eq!(quick.preset, Preset::Quick);

    let dir = tempfile::tempdir().unwrap();
    let bad = |text: &str| {
        let p = dir.path().join("x.toml");
        std::fs::write(&p, text).unwrap();
        format!("{:#}", ExperimentConfig::from_file(&p).unwrap_err())
    };
    let base = "name = \"x\"\ndataset = \"cifar10\"\n[[runs]]\ndepth = 20\nresidual = true\n";
    let e = bad(&format!("{base}[train]\nlearning_rate = 0.1\n"));
    assert!(e.contains("x.toml") && e.contains("learning_rate"), "{e}");
    let e = bad(&base.replace("depth = 20", "depth = 21"));
    assert!(e.contains("x.toml") && e.contains("depth 21"), "{e}");
    let e = bad(&base.replace("cifar10", "mnist"));
    assert!(e.contains("mnist"), "{e}");
    let e = bad(&format!("{base}[train]\nlog_every = 100\neval_every = 150\n"));
    assert!(e.contains("eval_every (150)"), "{e}");
    let e = format!("{:#}", ExperimentConfig::from_file(&dir.path().join("missing.toml")).unwrap_err());
    assert!(e.contains("missing.toml"), "{e}");
}
