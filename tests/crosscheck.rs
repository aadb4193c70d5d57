//! The cross-check's machinery (not its science): Welch intervals on known inputs, and a tiny run
//! of both sides (ours and bench/pytorch_crosscheck.py, which needs Python with torch: `make test`
//! provides it) whose curves, comparisons, summary and figure have the documented shape.

mod common;

use resnet_repro::experiment::crosscheck::{CrosscheckOptions, compare, markdown, run_crosscheck};
use resnet_repro::experiment::{CrosscheckDirs, Experiment};
use resnet_repro::models::HeInit;
use resnet_repro::stats::{t_quantile, welch_95};
use std::path::Path;

#[test]
fn welch_intervals_match_the_textbook() {
    // Student's t 0.975 quantiles (tables): df 1, 4, 8, 30, and the normal's 1.96 far out.
    for (df, q) in [(1.0, 12.706), (4.0, 2.776), (8.0, 2.306), (30.0, 2.042), (1e6, 1.960)] {
        assert!((t_quantile(0.975, df) - q).abs() < 2e-3, "df {df}: {}", t_quantile(0.975, df));
    }
    // Equal variances and sizes: se = sqrt(2.5/5 + 2.5/5) = 1, df = 8.
    let (d, lo, hi) = welch_95(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    assert!((d + 1.0).abs() < 1e-12 && (lo + 1.0 + 2.306).abs() < 2e-3 && (hi + 1.0 - 2.306).abs() < 2e-3);
    // Unequal: a = [10, 12] (var 2), b = [0, 0, 6] (var 12): se² = 1 + 4, df = 25 / (1 + 8) = 2.78.
    let (d, lo, hi) = welch_95(&[10.0, 12.0], &[0.0, 0.0, 6.0]).unwrap();
    let half = t_quantile(0.975, 25.0 / 9.0) * 5f64.sqrt();
    assert!((d - 9.0).abs() < 1e-12 && (lo - (9.0 - half)).abs() < 1e-9 && (hi - (9.0 + half)).abs() < 1e-9);
    assert!(half > 2.0 * 5f64.sqrt() * 1.5, "few degrees of freedom widen the interval: {half}");
    assert_eq!(welch_95(&[1.0], &[1.0, 2.0]), None, "one seed has no spread");
}

#[test]
fn a_tiny_cross_check_writes_curves_comparisons_a_summary_and_a_figure() {
    let dir = tempfile::tempdir().unwrap();
    let exp: Experiment = toml::from_str(
        r#"
        name = "tiny"
        preset = "quick"
        seeds = [0, 1]
        [data]
        dataset = "fashion-mnist"
        [train]
        batch_size = 16
        lr = 0.1
        milestones = []
        iterations = 4
        log_every = 2
        eval_every = 2
        checkpoint_every = 2
        [[runs]]
        depth = 8
        residual = false
        [[runs]]
        depth = 8
        residual = true
        "#,
    )
    .unwrap();
    let root = dir.path().join("crosscheck");
    let o = CrosscheckOptions {
        runner: common::fixture_runner(dir.path(), &root),
        dirs: CrosscheckDirs { root: root.clone() },
        inits: vec![HeInit::FanIn, HeInit::FanOut],
        python: std::env::var("RESNET_REPRO_PYTHON").unwrap_or_else(|_| "python3".into()),
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/pytorch_crosscheck.py"),
    };
    let curves = run_crosscheck(&exp, &o).unwrap_or_else(|e| {
        panic!("{e:#}\n(this test needs Python with torch 2.11: `make test` provides it, or set RESNET_REPRO_PYTHON)")
    });
    // 2 sides x 2 inits x 2 nets x 2 seeds x 2 rows (iterations 2 and 4), each with a test error.
    assert_eq!(curves.len(), 32);
    assert!(curves.iter().all(|r| r.test_error.is_some_and(|e| (0.0..=100.0).contains(&e))));
    assert!(curves.iter().all(|r| (0.0..=100.0).contains(&r.train_error) && [2, 4].contains(&r.iteration)));
    let header =
        std::fs::read_to_string(root.join("curves.csv")).unwrap().lines().next().unwrap().to_string();
    assert_eq!(header, "framework,init,net,seed,iteration,train_error,test_error");
    assert!(root.join("ours-fan_out/fashion-mnist-quick/resnet8/seed1/final.json").is_file());
    assert!(root.join("pytorch-fan_in/plain8/seed0/metrics.csv").is_file());
    // One comparison per init, net, checkpoint and measure, each with two seeds a side.
    let rows = compare(&curves);
    assert_eq!(rows.len(), 2 * 2 * 2 * 2);
    assert!(rows.iter().all(|r| r.ours.2 == 2 && r.pytorch.2 == 2 && r.diff.is_some()));
    let md = markdown(&rows, &exp);
    assert!(md.contains("## init = \"fan_out\"") && md.contains("| resnet8 | 4 | test |"), "{md}");
    // A second call trains nothing on either side and gathers the same curves.
    assert_eq!(run_crosscheck(&exp, &o).unwrap(), curves);
    let plots = dir.path().join("plots");
    let written = resnet_repro::report::figures::render_crosscheck(&curves, &plots).unwrap();
    assert_eq!(written.len(), 2);
    let img = image::open(&written[1]).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1400, 560), "a panel per init");
}
