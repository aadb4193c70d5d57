//! REPORT.md from a fixture runs/ folder: the right numbers beside the paper's, image links, and
//! what has not been run.

use resnet_repro::report::{ReportPaths, build_report, write_report};
use resnet_repro::responses::{ResponseRow, merge_responses};
use std::path::Path;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn final_json(
    net: &str,
    depth: usize,
    residual: bool,
    dataset: &str,
    seed: u64,
    test_error: Option<f64>,
) -> String {
    serde_json::json!({
        "net": net, "depth": depth, "residual": residual, "dataset": dataset, "preset": "full", "seed": seed,
        "iterations": 64000, "test_error": test_error, "test_images": 10000, "val_error": null,
        "train_error": 0.5, "seconds": 1234.0, "device": "cuda:0", "torch": "2.11.0+cu130",
        "commit": "abc1234", "warmup_ended_at": null, "finished": "2026-11-20T10:00:00Z"
    })
    .to_string()
}

#[test]
fn report_from_fixture_runs_has_the_numbers_the_links_and_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let t6 = runs.join("table6/cifar10");
    for (seed, err) in [(0, 8.5), (1, 8.9)] {
        let d = t6.join(format!("resnet20/seed{seed}"));
        write(&d.join("config.toml"), "# fixture\n");
        write(&d.join("final.json"), &final_json("resnet20", 20, true, "cifar10", seed, Some(err)));
    }
    write(&t6.join("plain20/seed0/config.toml"), "# fixture\n");
    write(&t6.join("plain20/seed0/final.json"), &final_json("plain20", 20, false, "cifar10", 0, Some(9.1)));
    // A run still in progress.
    write(&t6.join("resnet56/seed0/config.toml"), "# fixture\n");
    write(
        &t6.join("resnet56/seed0/metrics.csv"),
        "iteration,epoch,lr,train_loss,train_error,val_error,test_error,seconds\n\
         1200,3.1,0.1,0.9,30.0,,,95.0\n",
    );
    let t2 = runs.join("table2/imagenet/resnet34-A/seed0");
    write(&t2.join("config.toml"), "# fixture\n");
    write(&t2.join("final.json"), &final_json("resnet34-A", 34, true, "imagenet", 0, None));
    write(
        &t2.join("eval-ten-crop.json"),
        r#"{"protocol": "ten-crop", "top1_error": 26.0, "top5_error": 8.1, "images": 50000, "views": 10,
            "bn_reestimated_over": 25600, "seconds": 100.0}"#,
    );
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
    has("| ResNet-20 | 2 | 8.50 (8.70±0.28) | 8.75 | -0.25 | 64000 | 20m 34s | cuda:0 |");
    has("| plain-20 | 1 | 9.10 | - |  |");
    // Table 2: 10-crop top-1/top-5 beside 25.03/7.76.
    has("| ResNet-34 A | ten-crop | 26.00 | 8.10 | 25.03 | 7.76 | +0.97 | 50000 | 64000 | yes |");
    // Figure 7: 3 layers, mean 0.6, largest 0.7.
    has("| ResNet-20 | 0 | 3 | 0.600 | 0.700 | 10000 |");
    // Figures: links relative to the report's folder; a missing one named with its command.
    has("![Figure 6 (cifar10)](../plots/fig6_cifar10.png)");
    has("![Figure 7 (cifar10)](../plots/fig7_cifar10.png)");
    has("Figure 1 (cifar10): not rendered yet (`make plots`)");
    has("Figure 4 (imagenet): not rendered yet");
    // What has not been run, with its command.
    has("Not run yet: `make reproduce-table1`");
    has("Not run yet: `make reproduce-table3");
    // Each run: dataset, seed, iterations, wall time, device, torch, commit; the partial one too.
    has(
        "| table6 | `table6/cifar10/resnet20/seed1` | cifar10 | 1 | 64000 | 20m 34s | cuda:0 | 2.11.0+cu130 | abc1234 |",
    );
    has("| table6 | `table6/cifar10/resnet56/seed0` | | | at 1200 (1m 35s) |");
    let t6_at = md.find("## Table 6").unwrap();
    assert!(
        md.find("| plain-20 |").unwrap() > t6_at && md.find("| plain-20 |") < md.find("| ResNet-20 | 2 |")
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
