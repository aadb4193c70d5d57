//! Released results (results/, src/experiment/release.rs): every file the manifest lists is the
//! file it lists, a released run's test error is measured again from its weights exactly, and a
//! run snapshotted mid-way (results/.../in-progress/) and restored into a fresh folder resumes to
//! the same bits as a run never stopped; `make release-snapshot` publishes a run that finished
//! while the queue went on. The first test checks the committed release itself.

mod common;

use resnet_repro::data::DataOptions;
use resnet_repro::eval::responses::{fig7_position, read_responses};
use resnet_repro::experiment::estimate::estimate;
use resnet_repro::experiment::figure7::measure_store;
use resnet_repro::experiment::findings::{findings, findings_markdown};
use resnet_repro::experiment::release::reevaluate;
use resnet_repro::experiment::{Experiment, Release, Store};
use std::path::Path;
use tch::Device;

/// The names in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_release_is_as_its_manifest_lists_and_its_test_errors_reproduce() {
    let release = Release::new(repo().join("results"));
    let checked = release.check().unwrap();
    println!("results/MANIFEST: {checked} files as listed");
    let runs = release.table("table6").runs().unwrap();
    let finished: Vec<_> = runs.into_iter().filter(|r| r.dir.is_finished()).collect();
    let listed: Vec<_> = release.manifest().unwrap().into_iter().map(|e| e.file).collect();
    for run in &finished {
        for f in resnet_repro::experiment::release::RELEASED_FILES {
            let rel = run.dir.path.join(f).strip_prefix(repo().join("results")).unwrap().to_path_buf();
            assert!(listed.contains(&rel), "{} is not in the manifest", rel.display());
        }
    }
    assert!(!finished.is_empty(), "results/table6 holds no released run");
    let Some(data) = fashion_mnist("the re-evaluation") else { return };
    // As the releases were trained: one thread.
    tch::set_num_threads(1);
    for run in finished.iter().filter(|r| r.config.net.name() == "resnet20") {
        let record = run.dir.final_record().unwrap().unwrap();
        let e = reevaluate(&run.dir, &data, Device::Cpu).unwrap();
        assert_eq!(
            (e.test_error, e.images),
            (record.test_error, record.test_images),
            "{}",
            run.dir.path.display()
        );
        println!("{}: test error {:?} again", run.dir.path.display(), e.test_error);
    }
}

/// The real Fashion-MNIST the release was trained on (Debian's package, or data/), if there.
fn fashion_mnist(what: &str) -> Option<DataOptions> {
    let here = repo().join("data/fashion-mnist").is_dir() || common::fashion_mnist_installed();
    if !here {
        eprintln!("SKIPPED {what}");
    }
    here.then(|| DataOptions { allow_download: false, ..DataOptions::new(repo().join("data")) })
}

#[test]
fn the_released_figure_7_and_findings_are_what_the_released_networks_give() {
    let store = Release::new(repo().join("results")).table("table6");
    let runs = store.runs().unwrap();
    let rows = read_responses(&store.responses_csv()).unwrap();
    // Every released network of Figure 7 is measured, a row per 3x3 layer (depth - 1).
    for run in runs.iter().filter(|r| r.dir.is_finished() && r.config.seed == 0) {
        let net = &run.config.net;
        if fig7_position(net.residual(), net.depth()).is_some() {
            let layers = rows.iter().filter(|r| r.net == net.name()).count();
            assert_eq!(layers, net.depth() - 1, "{}'s responses", net.name());
        }
    }
    // findings.md holds what the released files give.
    let text = std::fs::read_to_string(store.findings_md()).unwrap();
    let computed = findings_markdown(&findings(&runs, &rows).unwrap());
    assert!(computed.contains("| ResNet-20 vs plain-20 | final test error (%) |"), "{computed}");
    assert!(
        text.contains(&computed),
        "results/table6/findings.md is not what results/ gives: run `make results`"
    );
    // ResNet-20's responses measured again from its weights (float sums: any x86-64 CPU within 1e-4).
    let Some(data) = fashion_mnist("Figure 7's re-measurement") else { return };
    let others: Vec<_> = rows.iter().filter(|r| r.net != "resnet20").cloned().collect();
    let again = measure_store(&store, &others, &data, Device::Cpu, 500).unwrap();
    let committed: Vec<_> = rows.iter().filter(|r| r.net == "resnet20").collect();
    assert_eq!(again.len(), committed.len());
    for (a, c) in again.iter().zip(committed) {
        assert_eq!((a.layer, a.images), (c.layer, c.images));
        assert!(
            (a.std - c.std).abs() <= 1e-4 * c.std,
            "layer {}: {} measured, {} committed",
            a.layer,
            a.std,
            c.std
        );
    }
}

#[test]
fn the_readmes_status_table_is_what_the_release_holds() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let table = resnet_repro::report::status::table(&repo().join("results")).unwrap();
    let expected = resnet_repro::report::status::splice(&readme, &table).unwrap();
    assert!(expected == readme, "README.md's status table is not results/'s: run `make results`\n{table}");
    assert!(table.contains("| Table 6: ResNet-20 |"), "{table}");
}

/// A tiny experiment: ResNet-8 on the test's Fashion-MNIST fixture, 30 iterations of 16, a
/// checkpoint every 10.
fn tiny() -> Experiment {
    let text = "name = \"rel\"\npreset = \"quick\"\nseeds = [0]\n[data]\ndataset = \"fashion-mnist\"\n\
                eval_batch_size = 8\n[train]\nbatch_size = 16\nlr = 0.1\nmilestones = [20]\niterations = 30\n\
                log_every = 10\neval_every = 10\ncheckpoint_every = 10\n[[runs]]\ndepth = 8\nresidual = true\n";
    toml::from_str(text).unwrap()
}

#[test]
fn a_published_run_is_checked_by_its_manifest_and_its_weights_give_its_test_error_again() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let opts = common::fixture_runner(dir.path(), &dir.path().join("runs"));
    resnet_repro::experiment::run_experiment(&tiny(), &opts).unwrap();
    let release = Release::new(dir.path().join("results"));
    let released = release.publish(&opts.store, "table6", "make release-runs").unwrap();
    assert_eq!(released.len(), 1);
    let run = &released[0].dir;
    let files = [
        "class_index.csv",
        "config.toml",
        "data_mean.safetensors",
        "final.json",
        "metrics.csv",
        "model.safetensors",
    ];
    assert_eq!(names(&run.path), files);
    assert_eq!(release.check().unwrap(), 6);
    let entries = release.manifest().unwrap();
    assert!(entries.iter().all(|e| e.command == "make release-runs" && e.sha256.len() == 64));
    let weights = entries.iter().find(|e| e.file.ends_with("model.safetensors")).unwrap();
    assert_eq!(weights.bytes, std::fs::metadata(run.path.join("model.safetensors")).unwrap().len());
    // The weights give final.json's test error again, exactly.
    let record = run.final_record().unwrap().unwrap();
    let e = reevaluate(run, &opts.data, Device::Cpu).unwrap();
    assert_eq!((e.test_error, e.images), (record.test_error, record.test_images));
    // Publishing the same run again changes nothing.
    assert!(release.publish(&opts.store, "table6", "make release-runs").unwrap().is_empty());
    assert_eq!(release.manifest().unwrap(), entries);
    // A run that differs replaces its entries instead of adding to them.
    let metrics = opts.store.runs().unwrap()[0].dir.path.join("metrics.csv");
    let original = std::fs::read(&metrics).unwrap();
    std::fs::write(&metrics, [&original[..], b"\n"].concat()).unwrap();
    assert_eq!(release.publish(&opts.store, "table6", "rerun").unwrap().len(), 1);
    let replaced = release.manifest().unwrap();
    assert_eq!(replaced.len(), entries.len());
    assert!(replaced.iter().all(|e| e.command == "rerun"));
    std::fs::write(&metrics, &original).unwrap();
    release.publish(&opts.store, "table6", "make release-runs").unwrap();
    assert_eq!(release.manifest().unwrap(), entries);
    // A fresh work tree: the released run is restored as finished, so the same command does not
    // train it again, and publishing leaves it and its entries (the command that trained it) alone.
    let fresh = common::fixture_runner(dir.path(), &dir.path().join("fresh"));
    let restored = release.restore_released(&fresh.store, "table6").unwrap();
    assert_eq!(restored.len(), 1);
    assert!(release.restore_released(&fresh.store, "table6").unwrap().is_empty(), "restored once");
    resnet_repro::experiment::run_experiment(&tiny(), &fresh).unwrap();
    let mut left = names(&restored[0].path);
    left.retain(|n| n != "lock"); // the worker's claim, left by any run
    assert_eq!(left, files, "not trained again (no checkpoint, no other file)");
    assert!(release.publish(&fresh.store, "table6", "another command").unwrap().is_empty());
    assert_eq!(release.manifest().unwrap(), entries);
    // A changed byte is found and named.
    let f = run.path.join("metrics.csv");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&f, bytes).unwrap();
    let err = format!("{:#}", release.check().unwrap_err());
    assert!(err.contains("metrics.csv: not the file the manifest lists"), "{err}");
}

#[test]
fn a_run_snapshotted_mid_way_and_restored_elsewhere_resumes_to_the_same_bits() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let whole = common::fixture_runner(dir.path(), &dir.path().join("whole"));
    resnet_repro::experiment::run_experiment(&tiny(), &whole).unwrap();
    // Another work tree: stopped at 20, its newest checkpoint kept in results/.
    let mut first = common::fixture_runner(dir.path(), &dir.path().join("first"));
    first.train.stop_after = Some(20);
    resnet_repro::experiment::run_experiment(&tiny(), &first).unwrap();
    let release = Release::new(dir.path().join("results"));
    let kept = release.snapshot(&first.store, "table6").unwrap();
    assert_eq!(kept.iter().map(|(_, it)| *it).collect::<Vec<_>>(), [20]);
    let pending = &kept[0].0;
    assert_eq!(names(&pending.path), ["ckpt-00000020", "config.toml", "metrics.csv"]);
    // The next work tree: a fresh runs folder, restored, then the same command.
    let next = common::fixture_runner(dir.path(), &dir.path().join("next"));
    let restored = release.restore(&next.store, "table6").unwrap();
    assert_eq!(restored.len(), 1);
    assert!(release.restore(&next.store, "table6").unwrap().is_empty(), "restored once");
    resnet_repro::experiment::run_experiment(&tiny(), &next).unwrap();
    let one = |s: &Store| s.runs().unwrap().into_iter().next().unwrap().dir;
    let (a, b) = (one(&whole.store), one(&next.store));
    assert_eq!(
        std::fs::read(a.files().weights).unwrap(),
        std::fs::read(b.files().weights).unwrap(),
        "the final weights"
    );
    let rows = |d: &resnet_repro::experiment::RunDir| {
        d.metrics()
            .unwrap()
            .into_iter()
            .map(|m| (m.iteration, m.train_loss, m.test_error))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&a), rows(&b));
    // Once published, the snapshot is dropped.
    release.publish(&next.store, "table6", "x").unwrap();
    assert!(!pending.path.exists());
}

#[test]
fn estimating_a_sweep_first_changes_none_of_its_bits_and_counts_what_is_left() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let plain = common::fixture_runner(dir.path(), &dir.path().join("plain"));
    resnet_repro::experiment::run_experiment(&tiny(), &plain).unwrap();
    // The same sweep with timed steps of its net first (as `how_long` does before a sweep).
    let timed = common::fixture_runner(dir.path(), &dir.path().join("timed"));
    let runs = tiny().resolve(resnet_repro::data::Shape { classes: 10, channels: 1, size: 28 }).unwrap();
    let est = estimate(&runs, Some(&timed.store), Device::Cpu).unwrap().unwrap();
    assert_eq!(est.runs.len(), 1);
    assert!(est.seconds() > 0.0 && est.seconds().is_finite(), "{est:?}");
    resnet_repro::experiment::run_experiment(&tiny(), &timed).unwrap();
    let one = |s: &Store| s.runs().unwrap().into_iter().next().unwrap().dir;
    let (a, b) = (one(&plain.store), one(&timed.store));
    assert_eq!(std::fs::read(a.files().weights).unwrap(), std::fs::read(b.files().weights).unwrap());
    // A finished run has nothing left; a run stopped at 20 of 30 has 10 iterations left.
    assert!(estimate(&runs, Some(&timed.store), Device::Cpu).unwrap().unwrap().runs.is_empty());
    let mut part = common::fixture_runner(dir.path(), &dir.path().join("part"));
    part.train.stop_after = Some(20);
    resnet_repro::experiment::run_experiment(&tiny(), &part).unwrap();
    let left = estimate(&runs, Some(&part.store), Device::Cpu).unwrap().unwrap();
    assert_eq!(
        left.runs.iter().map(|r| (r.label.as_str(), r.iterations)).collect::<Vec<_>>(),
        [("resnet8 seed0", 10)]
    );
    assert_eq!(estimate(&runs, None, Device::Cpu).unwrap().unwrap().runs[0].iterations, 30);
}

/// What `make -n <target> RELEASE_RUNS=<runs>` would run of the `release` binary, in order.
fn release_commands(target: &str, runs: &str) -> Vec<String> {
    let out = common::make_dry_run(&[target, &format!("RELEASE_RUNS={runs}")]);
    out.lines().filter(|l| l.starts_with("target/release/release ")).map(String::from).collect()
}

#[test]
fn make_release_snapshot_publishes_a_run_that_finished_while_the_queue_went_on() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let release = Release::new(dir.path().join("results"));
    // Two runs stopped at 20 and snapshotted; then one of them finished, the other not.
    let runs = dir.path().join("runs");
    let mut stopped = common::fixture_runner(dir.path(), &runs);
    stopped.train.stop_after = Some(20);
    let mut plain = tiny();
    plain.runs[0].residual = false;
    for e in [&tiny(), &plain] {
        resnet_repro::experiment::run_experiment(e, &stopped).unwrap();
    }
    assert_eq!(release.snapshot(&stopped.store, "table6").unwrap().len(), 2);
    resnet_repro::experiment::run_experiment(&tiny(), &common::fixture_runner(dir.path(), &runs)).unwrap();
    // The target's commands as make gives them, but the release a scratch one.
    let snapshot = release_commands("release-snapshot", "runs");
    let verbs: Vec<&str> = snapshot.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(verbs, ["snapshot", "publish", "status"], "{snapshot:#?}");
    let bin = env!("CARGO_BIN_EXE_release").replace('\'', r"'\''");
    for line in &snapshot[..2] {
        let line = line.replacen("target/release/release", &format!("'{bin}' --results results"), 1);
        let o =
            std::process::Command::new("sh").args(["-c", &line]).current_dir(dir.path()).output().unwrap();
        assert!(o.status.success(), "{line}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let names_of = |s: Store| s.runs().unwrap().into_iter().map(|r| r.config.net.name()).collect::<Vec<_>>();
    assert_eq!(names_of(release.table("table6")), ["resnet8"]);
    assert_eq!(names_of(release.in_progress("table6")), ["plain8"], "the finished run's snapshot dropped");
    assert_eq!(release.check().unwrap(), 6);
    // Listed with the command that trained it: the one `make release-runs` publishes with.
    let publish = release_commands("release-runs", "runs").into_iter().find(|l| l.contains(" publish "));
    assert_eq!(publish.as_ref(), Some(&snapshot[1]));
    let command = release.manifest().unwrap()[0].command.clone();
    assert!(command.starts_with("scripts/workers 2 target/release/cifar_depth_sweep "), "{command}");
}
