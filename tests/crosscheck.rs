//! The cross-check's machinery (not its science): Welch intervals on known inputs, and a tiny run
//! of both sides (ours and bench/pytorch_crosscheck.py, which needs Python with torch: `make test`
//! provides it) whose curves, comparisons, summary and figure have the documented shape.

mod common;

use resnet_repro::experiment::crosscheck::{
    CrosscheckOptions, Side, compare, markdown, pytorch_args, run_crosscheck,
};
use resnet_repro::experiment::{CrosscheckDirs, Experiment, Swap};
use resnet_repro::models::HeInit;
use resnet_repro::stats::{Interval, t_quantile, welch_95};
use std::path::Path;

#[test]
fn welch_intervals_match_the_textbook() {
    // Student's t 0.975 quantiles (tables): df 1, 4, 8, 30, and the normal's 1.96 far out.
    for (df, q) in [(1.0, 12.706), (4.0, 2.776), (8.0, 2.306), (30.0, 2.042), (1e6, 1.960)] {
        assert!((t_quantile(0.975, df) - q).abs() < 2e-3, "df {df}: {}", t_quantile(0.975, df));
    }
    // Equal variances and sizes: se = sqrt(2.5/5 + 2.5/5) = 1, df = 8.
    let Interval { diff: d, lo, hi } =
        welch_95(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    assert!((d + 1.0).abs() < 1e-12 && (lo + 1.0 + 2.306).abs() < 2e-3 && (hi + 1.0 - 2.306).abs() < 2e-3);
    // Unequal: a = [10, 12] (var 2), b = [0, 0, 6] (var 12): se² = 1 + 4, df = 25 / (1 + 8) = 2.78.
    let Interval { diff: d, lo, hi } = welch_95(&[10.0, 12.0], &[0.0, 0.0, 6.0]).unwrap();
    let half = t_quantile(0.975, 25.0 / 9.0) * 5f64.sqrt();
    assert!((d - 9.0).abs() < 1e-12 && (lo - (9.0 - half)).abs() < 1e-9 && (hi - (9.0 + half)).abs() < 1e-9);
    assert!(half > 2.0 * 5f64.sqrt() * 1.5, "few degrees of freedom widen the interval: {half}");
    assert_eq!(welch_95(&[1.0], &[1.0, 2.0]), None, "one seed has no spread");
}

#[test]
fn a_tiny_cross_check_writes_curves_comparisons_a_summary_and_a_figure() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let exp = tiny("");
    let root = dir.path().join("crosscheck");
    let o = options(dir.path(), &root, vec![HeInit::FanIn, HeInit::FanOut], Swap::default());
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
    assert!(rows.iter().all(|r| r.ours.n == 2 && r.pytorch.n == 2 && r.diff.is_some()));
    let md = markdown(&rows, &exp, Swap::default());
    assert!(md.contains("## init = \"fan_out\"") && md.contains("| resnet8 | 4 | test |"), "{md}");
    // A second call trains nothing on either side and gathers the same curves.
    assert_eq!(run_crosscheck(&exp, &o).unwrap(), curves);
    let plots = dir.path().join("plots");
    let written = resnet_repro::report::figures::render_crosscheck(&curves, &plots, "").unwrap();
    assert_eq!(written.len(), 2);
    let img = image::open(&written[1]).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1400, 560), "a panel per init");
}

/// The tiny cross-check's experiment: depth-8 nets, 2 seeds, 4 iterations of 16 images; `extra`
/// goes into `[train]`.
fn tiny(extra: &str) -> Experiment {
    let text = format!(
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
        {extra}
        [[runs]]
        depth = 8
        residual = false
        [[runs]]
        depth = 8
        residual = true
        "#
    );
    toml::from_str(&text).unwrap()
}

fn options(dir: &Path, root: &Path, inits: Vec<HeInit>, swap: Swap) -> CrosscheckOptions {
    CrosscheckOptions {
        runner: common::fixture_runner(dir, root),
        dirs: CrosscheckDirs { root: root.to_path_buf(), swap },
        inits,
        python: std::env::var("RESNET_REPRO_PYTHON").unwrap_or_else(|_| "python3".into()),
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/pytorch_crosscheck.py"),
    }
}

#[test]
fn the_pytorch_side_trains_the_same_nets_and_recipe_on_our_device() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("crosscheck");
    let exp = Experiment { init: HeInit::FanOut, ..tiny("") };
    let mut o = options(dir.path(), &root, vec![HeInit::FanOut], Swap { init: true, data: false });
    o.runner.only = vec!["resnet8".parse().unwrap()];
    o.runner.train.device = tch::Device::Cuda(1);
    let args = pytorch_args(&exp, &o, Path::new("/data/fm"), 3).unwrap();
    let draws = format!("--draws={}", root.join("draws-fan_out").display());
    let out = format!("--out={}", root.join("pytorch-fan_out-with-our-init").display());
    for want in [
        "--data-dir=/data/fm",
        "--nets=resnet8",
        "--seeds=0,1",
        "--iterations=4",
        "--batch=16",
        "--log-every=2",
        "--eval-at=2,4",
        "--init=fan_out",
        "--threads=3",
        "--device=cuda:1",
        "--swap=init",
        &draws,
        &out,
    ] {
        assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
    }
    o.runner.train.device = tch::Device::Cpu;
    assert!(pytorch_args(&exp, &o, Path::new("/d"), 1).unwrap().contains(&"--device=cpu".to_string()));
    let mut stepped = exp.clone();
    stepped.train.milestones = vec![2];
    let err = pytorch_args(&stepped, &o, Path::new("/d"), 1).unwrap_err().to_string();
    assert!(err.contains("constant learning rate"), "{err}");
}

#[test]
fn with_our_initial_weights_and_data_stream_the_pytorch_side_trains_exactly_as_ours() {
    // In NCHW the two sides' steps are bit-identical (tests/lockstep.rs); with our draws swapped
    // in, the whole runs must be too: every training and test error, as the PyTorch side prints
    // them (4 decimals). This is what makes `--swap init` and `--swap data` a fair diagnosis.
    // Our runs and the exported draws seed libtorch's process-wide generator: no other test may
    // draw from it meanwhile, or the exported weights are not the ones our runs started from.
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("crosscheck");
    let exp = tiny(r#"layout = "contiguous""#);
    let swap = Swap { init: true, data: true };
    let curves = run_crosscheck(&exp, &options(dir.path(), &root, vec![HeInit::FanIn], swap)).unwrap();
    assert!(root.join("draws-fan_in/resnet8/seed1/init.safetensors").is_file());
    assert!(root.join("pytorch-fan_in-with-our-init-data/plain8/seed0/metrics.csv").is_file());
    assert!(root.join("curves-with-our-init-data.csv").is_file());
    let side = |fw: Side| -> Vec<(String, u64, u64, String, Option<String>)> {
        let mut v: Vec<_> = curves
            .iter()
            .filter(|r| r.framework == fw)
            .map(|r| {
                let f = |e: f64| format!("{e:.4}");
                (r.net.clone(), r.seed, r.iteration, f(r.train_error), r.test_error.map(f))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(side(Side::Ours).len(), 8);
    assert_eq!(side(Side::Ours), side(Side::PyTorch));
    // The seeds differ, so the runs do: the comparison is not vacuous.
    let ours = side(Side::Ours);
    assert_ne!(ours[0].3, ours[2].3, "{ours:?}");
    let md = markdown(&compare(&curves), &exp, swap);
    assert!(md.contains("trained with our initial weights and our data stream"), "{md}");
}
