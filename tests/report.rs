//! REPORT.md from a fixture runs/ folder: the right numbers beside the paper's, image links, and
//! what has not been run.

mod common;

use resnet_repro::data::DatasetName;
use resnet_repro::data::Protocol;
use resnet_repro::eval::EvalResult;
use resnet_repro::eval::responses::{ResponseRow, merge_responses};
use resnet_repro::experiment::Preset;
use resnet_repro::models::{CifarNet, ImageNetNet, NetSpec, Shortcut};
use resnet_repro::report::{ReportPaths, build_report, write_report};
use std::path::Path;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn report_from_fixture_runs_has_the_numbers_the_links_and_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let t6 = runs.join("table6");
    let cifar = |net: CifarNet, seed, err, done| {
        common::fixture_run(&t6, DatasetName::Cifar10, Preset::Full, NetSpec::Cifar(net), seed, err, done)
    };
    cifar(CifarNet::resnet(20), 0, 8.5, true);
    cifar(CifarNet::resnet(20), 1, 8.9, true);
    cifar(CifarNet::plain(20), 0, 9.1, true);
    // A run still in progress.
    cifar(CifarNet::resnet(56), 0, 7.0, false);
    // An ImageNet run of Table 2 with its 10-crop evaluation (the fixture's config is CIFAR's
    // recipe on the ImageNet net; only the network and the files matter here).
    let t2 = common::fixture_run(
        &runs.join("table2"),
        DatasetName::Cifar10,
        Preset::Full,
        NetSpec::ImageNet(ImageNetNet::resnet(34, Shortcut::A)),
        0,
        30.0,
        true,
    );
    t2.write_evaluation(&EvalResult {
        protocol: Protocol::TenCrop,
        top1_error: 26.0,
        top5_error: 8.1,
        images: 50000,
        views: 10,
        bn_reestimated_over: Some(25600),
        seconds: 100.0,
    })
    .unwrap();
    let fig7: Vec<ResponseRow> = [0.7, 0.5, 0.6]
        .iter()
        .enumerate()
        .map(|(i, &std)| ResponseRow {
            group: "cifar10".into(),
            net: "resnet20".into(),
            depth: 20,
            residual: true,
            seed: 0,
            layer: i + 1,
            std,
            images: 10000,
        })
        .collect();
    std::fs::create_dir_all(runs.join("fig7")).unwrap();
    merge_responses(&runs.join("fig7/responses.csv"), &fig7).unwrap();
    let plots = dir.path().join("plots");
    write(&plots.join("fig6_cifar10.png"), "png");
    write(&plots.join("fig7_cifar10.png"), "png");

    let paths =
        ReportPaths { runs: runs.clone(), plots: plots.clone(), out: dir.path().join("report/REPORT.md") };
    let md = write_report(&paths).unwrap();
    assert_eq!(std::fs::read_to_string(&paths.out).unwrap(), md);
    let has = |s: &str| assert!(md.contains(s), "REPORT.md lacks {s:?}:\n{md}");
    // Table 6: best (mean±std) over two seeds beside the paper's 8.75, and the difference.
    has("| ResNet-20 | test | 2 | 8.50 (8.70±0.28) | 8.75 | -0.25 | 10000 | 64000 | 20m 34s | cuda:0 |");
    has("| plain-20 | test | 1 | 9.10 | - |  |");
    // Table 2: 10-crop top-1/top-5 beside 25.03/7.76, the same renderer as the summaries.
    has("| ResNet-34 A | ten-crop (BN re-estimated) | 1 | 26.00 | 25.03 |");
    has("| 8.10 | 7.76 | 50000 |");
    // The deviations, from the runs' configurations.
    has("BN statistics over the whole batch of 128 on one device");
    // Figure 7: 3 layers, mean 0.6, largest 0.7.
    has("| ResNet-20 | 0 | 3 | 0.600 | 0.700 | 10000 |");
    // Figures: links relative to the report's folder; a missing one named with its command.
    has("![Figure 6 (cifar10)](../plots/fig6_cifar10.png)");
    has("![Figure 7 (cifar10)](../plots/fig7_cifar10.png)");
    has("Figure 1 (cifar10): not rendered yet (`make plots`)");
    has("Figure 4 (cifar10): not rendered yet");
    // What has not been run, with its command.
    has("Not run yet: `make reproduce-table1`");
    has("Not run yet: `make reproduce-table3");
    // Each run: dataset, seed, iterations, wall time, device, torch, commit; the partial one too.
    has(
        "| table6 | `table6/cifar10/resnet20/seed1` | cifar10 | 1 | 64000 | 20m 34s | cuda:0 | 2.11.0+cu130 | abc1234 |",
    );
    has("| table6 | `table6/cifar10/resnet56/seed0` | | | at 64000 (1m 04s) |");
    let t6_at = md.find("## Table 6").unwrap();
    assert!(
        md.find("| plain-20 |").unwrap() > t6_at
            && md.find("| plain-20 |") < md.find("| ResNet-20 | test | 2 |")
    );
}

#[test]
fn an_empty_runs_folder_lists_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let paths = ReportPaths {
        runs: dir.path().join("runs"),
        plots: dir.path().join("plots"),
        out: dir.path().join("REPORT.md"),
    };
    let md = build_report(&paths).unwrap();
    for cmd in [
        "make reproduce-table1",
        "make reproduce-table2",
        "make reproduce-table3",
        "make reproduce-table6",
        "make reproduce-fig7",
    ] {
        assert!(md.contains(cmd), "no {cmd} in:\n{md}");
    }
    assert!(md.contains("No training runs yet."));
}
