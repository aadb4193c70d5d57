//! Released results (results/, src/experiment/release.rs): every file the manifest lists is the
//! file it lists, a released run's test error is measured again from its weights exactly, and a
//! run snapshotted mid-way (results/.../in-progress/) and restored into a fresh folder resumes to
//! the same bits as a run never stopped. The first test checks the committed release itself.

mod common;

use resnet_repro::data::DataOptions;
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
    if finished.is_empty() {
        println!("no released run yet: results/table6/in-progress holds the unfinished ones");
        return;
    }
    let system = Path::new("/usr/share/datasets/fashion-mnist");
    if !system.is_dir() {
        assert!(std::env::var_os("RESNET_REPRO_REQUIRE_GLOO").is_none(), "CI installs dataset-fashion-mnist");
        eprintln!("SKIPPED the re-evaluation: no Fashion-MNIST (apt-get install dataset-fashion-mnist)");
        return;
    }
    // As the releases were trained: one thread.
    tch::set_num_threads(1);
    let data = DataOptions { allow_download: false, ..DataOptions::new(repo().join("data")) };
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
    // Another session's work tree: stopped at 20, its newest checkpoint kept in results/.
    let mut first = common::fixture_runner(dir.path(), &dir.path().join("first"));
    first.train.stop_after = Some(20);
    resnet_repro::experiment::run_experiment(&tiny(), &first).unwrap();
    let release = Release::new(dir.path().join("results"));
    let kept = release.snapshot(&first.store, "table6").unwrap();
    assert_eq!(kept.iter().map(|(_, it)| *it).collect::<Vec<_>>(), [20]);
    let pending = &kept[0].0;
    assert_eq!(names(&pending.path), ["ckpt-00000020", "config.toml", "metrics.csv"]);
    // The next session: a fresh runs folder, restored, then the same command.
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
