//! The detector's data, training and small-scale experiment: scenes of items with exact boxes,
//! a training step that leaves frozen BN and frozen parts alone and resumes to the same bytes,
//! and `detect_scenes` from a classification run's folder to its summary.

mod common;

use common::detect::{items, tiny_detector, tiny_recipe, tiny_scenes};
use resnet_repro::data::DatasetName;
use resnet_repro::detect::DetectionSet;
use resnet_repro::detect::scenes::{SceneSet, SceneSettings, generate};
use resnet_repro::detect::train::{DetectionRow, train};
use resnet_repro::experiment::{Preset, RunDir};
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::train::metrics::read_rows;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

fn boxes_of(t: &Tensor) -> Vec<[i64; 4]> {
    let v = Vec::<f32>::try_from(t.reshape([-1])).unwrap();
    v.chunks(4).map(|c| [c[0] as i64, c[1] as i64, c[2] as i64, c[3] as i64]).collect()
}

/// Each box is tight around non-zero pixels, the boxes are disjoint, and no pixel outside them is lit.
fn assert_exact(image: &Tensor, boxes: &[[i64; 4]], what: &str) {
    let lit = image.squeeze_dim(0).ne(0);
    let covered = lit.zeros_like();
    for (k, b) in boxes.iter().enumerate() {
        let region = lit.narrow(0, b[1], b[3] - b[1]).narrow(1, b[0], b[2] - b[0]);
        let any = |t: Tensor| t.any().int64_value(&[]) == 1;
        assert!(
            any(region.select(0, 0)) && any(region.select(0, -1)),
            "{what}: box {k} {b:?} not tight in y"
        );
        assert!(
            any(region.select(1, 0)) && any(region.select(1, -1)),
            "{what}: box {k} {b:?} not tight in x"
        );
        let mut c = covered.narrow(0, b[1], b[3] - b[1]).narrow(1, b[0], b[2] - b[0]);
        assert_eq!(c.sum(Kind::Int64).int64_value(&[]), 0, "{what}: box {k} {b:?} overlaps another");
        let _ = c.fill_(1);
    }
    let outside = lit.logical_and(&covered.logical_not()).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(outside, 0, "{what}: {outside} lit pixels outside every box");
}

#[test]
fn scenes_have_exact_disjoint_boxes_and_are_a_function_of_seed_and_index() {
    let items = items(40);
    let s = SceneSettings::default();
    let a = generate(&items, 30, 5, &s).unwrap();
    assert_eq!(a.images.size(), [30, 1, 96, 96]);
    let mut counts = Vec::new();
    for (i, t) in a.targets.iter().enumerate() {
        let boxes = boxes_of(&t.boxes);
        counts.push(boxes.len());
        assert!((1..=6).contains(&boxes.len()), "scene {i}: {} items", boxes.len());
        for b in &boxes {
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            assert!(b[0] >= 0 && b[1] >= 0 && b[2] <= 96 && b[3] <= 96 && w > 0 && h > 0, "scene {i}: {b:?}");
            assert!(w <= 48 && h <= 48, "scene {i}: {b:?} larger than the largest side");
        }
        assert_exact(&a.images.get(i as i64), &boxes, &format!("scene {i}"));
        let labels = Vec::<i64>::try_from(&t.labels).unwrap();
        let expected: Vec<i64> = a.sources[i].iter().map(|&s| s % 10 + 1).collect();
        assert_eq!(labels, expected, "scene {i}: labels are the items' classes + 1");
    }
    assert!(counts.iter().any(|&c| c >= 4) && counts.iter().any(|&c| c <= 2), "item counts {counts:?}");
    // The first 10 of 30 are the 10 of a set of 10; another seed gives other scenes.
    let b = generate(&items, 10, 5, &s).unwrap();
    assert!(b.images.equal(&a.images.narrow(0, 0, 10)));
    assert_eq!(b.sources, a.sources[..10].to_vec());
    let c = generate(&items, 10, 6, &s).unwrap();
    assert!(!c.images.equal(&b.images));
    // Bad settings and items are refused, naming them.
    let bad = SceneSettings { sides: (16, 200), ..s.clone() };
    let e = generate(&items, 1, 0, &bad).unwrap_err().to_string();
    assert!(e.contains("16..=200") && e.contains("96x96"), "{e}");
}

#[test]
fn a_batch_flips_images_and_boxes_together() {
    let scenes = generate(&items(40), 6, 1, &SceneSettings::default()).unwrap();
    let set = SceneSet { scenes, mean: 0.25 };
    let plain = set.batch(&[3, 4], &[false, false], Device::Cpu).unwrap();
    let flipped = set.batch(&[3, 4], &[true, false], Device::Cpu).unwrap();
    assert_eq!(plain.sizes, vec![(96, 96); 2]);
    // Normalised: 0 becomes -mean.
    let raw = set.scenes.images.get(3).to_kind(Kind::Float) / 255.0 - 0.25;
    assert!(plain.images.get(0).equal(&raw));
    assert!(flipped.images.get(0).equal(&raw.flip([2])));
    assert!(flipped.images.get(1).equal(&plain.images.get(1)));
    // The flipped boxes are exact in the flipped image.
    let lit = (&flipped.images.get(0) + 0.25).gt(1e-6).to_kind(Kind::Uint8);
    assert_exact(&lit, &boxes_of(&flipped.targets[0].boxes), "flipped scene 3");
    assert!(flipped.targets[1].boxes.equal(&plain.targets[1].boxes));
}

fn weights(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn training_leaves_frozen_parts_alone_and_a_resumed_run_ends_in_the_same_bytes() {
    let _rng = common::rng_lock();
    let set = tiny_scenes();
    let tmp = tempfile::tempdir().unwrap();
    let files = |name: &str| RunDir { path: tmp.path().join(name) }.files();
    let (mut vs, det) = tiny_detector(3);
    let before = weights(&vs);
    train(&det, &mut vs, &set, &tiny_recipe(4), (&files("straight"), 7, "straight"), None).unwrap();
    let after = weights(&vs);
    let mut changed = Vec::new();
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        let frozen = name.contains(".bn")
            || name.contains("backbone.bn1")
            || name.starts_with("backbone.conv1")
            || name.starts_with("backbone.fc")
            || name.contains("running_")
            || name.contains("num_batches");
        if frozen {
            assert!(a.equal(b), "{name} changed: BN, the stem and the classifier are frozen");
        } else if !a.equal(b) {
            changed.push(name.clone());
        }
    }
    for part in ["backbone.layer1.", "backbone.layer3.", "rpn.head.conv", "roi_heads.box_predictor.cls_score"]
    {
        assert!(changed.iter().any(|n| n.starts_with(part)), "nothing under {part} trained: {changed:?}");
    }
    let rows: Vec<DetectionRow> = read_rows(&files("straight").metrics).unwrap();
    assert_eq!(rows.iter().map(|r| r.iteration).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(rows.iter().all(|r| r.loss.is_finite() && r.loss > 0.0), "{rows:?}");
    assert_eq!((rows[2].lr, rows[3].lr), (0.01, 0.01 * 0.1), "the rate divided at the milestone");
    // The same run stopped after 2 updates and resumed from its checkpoint: the same bytes.
    let (mut vs2, det2) = tiny_detector(3);
    train(&det2, &mut vs2, &set, &tiny_recipe(2), (&files("resumed"), 7, "resumed"), None).unwrap();
    let (mut vs3, det3) = tiny_detector(99); // other initial weights: all of them come from the checkpoint
    train(&det3, &mut vs3, &set, &tiny_recipe(4), (&files("resumed"), 7, "resumed"), None).unwrap();
    let read = |f: &Path| std::fs::read(f).unwrap();
    assert!(
        read(&files("straight").weights) == read(&files("resumed").weights),
        "the resumed run's weights differ"
    );
    let resumed: Vec<DetectionRow> = read_rows(&files("resumed").metrics).unwrap();
    let losses = |r: &[DetectionRow]| r.iter().map(|r| r.loss).collect::<Vec<_>>();
    assert_eq!(losses(&resumed), losses(&rows));
}

/// A classification run's folder with a network of `net` and its weights (random, seeded).
fn backbone_run(out: &Path, net: CifarNet, seed: u64) -> RunDir {
    let dir = common::fixture_run(
        out,
        DatasetName::FashionMnist,
        Preset::Full,
        NetSpec::Cifar(net.clone()),
        seed,
        9.0,
        true,
    );
    tch::manual_seed(seed as i64 + 100);
    let vs = nn::VarStore::new(Device::Cpu);
    net.build(&vs.root()).unwrap();
    resnet_repro::models::save_weights(&vs, &dir.files().weights).unwrap();
    dir
}

/// A small-scale detection experiment in `dir`/scenes.toml on `backbones`, with (iterations,
/// checkpoint_every) for `train`: 48-pixel scenes of 1-3 items, 12 to train and 6 to score.
fn scenes_config(
    dir: &Path,
    backbones: &[&RunDir],
    inits: &[&str],
    seeds: &[u64],
    (iterations, checkpoint_every): (u64, u64),
) -> std::path::PathBuf {
    let list = |v: Vec<String>| v.join(", ");
    let backbones = list(backbones.iter().map(|b| format!("{:?}", b.path.display().to_string())).collect());
    let inits = list(inits.iter().map(|i| format!("{i:?}")).collect());
    let seeds = list(seeds.iter().map(u64::to_string).collect());
    let config = dir.join("scenes.toml");
    std::fs::write(
        &config,
        format!(
            r#"backbones = [{backbones}]
inits = [{inits}]
seeds = [{seeds}]
[scenes]
size = 48
items = [1, 3]
sides = [12, 24]
train = 12
test = 6
seed = 0
[detector]
anchor_sizes = [12.0, 24.0]
rpn_pre_nms = [200, 100]
rpn_post_nms = [50, 20]
rpn_batch = 32
regions_per_image = 16
pooled = 6
[train]
iterations = {iterations}
images_per_step = 2
lr = 0.01
milestones = [2]
frozen_parts = 1
log_every = 1
checkpoint_every = {checkpoint_every}
"#
        ),
    )
    .unwrap();
    config
}

#[test]
fn detect_scenes_trains_scores_and_summarises_from_classification_runs() {
    if !common::fashion_mnist_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data"); // empty: the scenes come from Debian's Fashion-MNIST
    let one = |residual: bool| CifarNet { residual, in_channels: 1, image_size: 28, ..CifarNet::resnet(8) };
    let plain = backbone_run(&tmp.path().join("cls"), one(false), 0);
    let res = backbone_run(&tmp.path().join("cls"), one(true), 0);
    let config = scenes_config(tmp.path(), &[&plain, &res], &["pretrained", "scratch"], &[0, 1], (3, 1));
    let out = tmp.path().join("runs");
    let bin = env!("CARGO_BIN_EXE_detect_scenes");
    let run = |extra: &[&str]| {
        let o = std::process::Command::new(bin)
            .args(["--config".as_ref(), config.as_os_str(), "--out".as_ref(), out.as_os_str()])
            .args([
                "--data-dir".as_ref(),
                data.as_os_str(),
                "--no-download".as_ref(),
                "--threads".as_ref(),
                "1".as_ref(),
            ])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "detect_scenes failed:\n{err}");
        err
    };
    let log = run(&[]);
    for name in ["plain8-pretrained", "plain8-scratch", "resnet8-pretrained", "resnet8-scratch"] {
        for seed in [0, 1] {
            let dir = out.join(name).join(format!("seed{seed}"));
            for f in ["config.toml", "metrics.csv", "model.safetensors", "final.json"] {
                assert!(dir.join(f).is_file(), "{}: no {f}\n{log}", dir.display());
            }
            let rec: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("final.json")).unwrap()).unwrap();
            assert_eq!(rec["iterations"], 3);
            assert_eq!(rec["test_scenes"], 6);
            let ap50 = rec["scores"]["ap50"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&ap50), "{name}: {rec}");
        }
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    for row in ["| plain8 | pretrained | 2 |", "| resnet8 | scratch | 2 |"] {
        assert!(md.contains(row), "summary.md has no {row}:\n{md}");
    }
    assert!(md.contains("residual better than plain (resnet8 − plain8, pretrained)"), "{md}");
    assert!(md.contains("pre-trained better than from scratch (resnet8)"), "{md}");
    assert!(md.contains("| 8 | COCO train, COCO val | mAP@[.5, .95] | 21.2 | 27.2 |"), "{md}");
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8, "{csv}");
    // Again: nothing is trained twice, the summary is the same.
    let again = run(&[]);
    assert!(!again.contains("iteration 1/3"), "a finished run was trained again:\n{again}");
    assert_eq!(std::fs::read_to_string(out.join("summary.md")).unwrap(), md);
    // A changed backbone is another run: refused, naming the folder.
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    one(true).build(&vs.root()).unwrap();
    resnet_repro::models::save_weights(&vs, &res.files().weights).unwrap();
    let o = std::process::Command::new(bin)
        .args(["--config".as_ref(), config.as_os_str(), "--out".as_ref(), out.as_os_str()])
        .args([
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--no-download".as_ref(),
            "--only".as_ref(),
            "resnet8-pretrained/seed0".as_ref(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("resnet8-pretrained/seed0")
            && err.contains("another configuration"),
        "{err}"
    );
}

/// `detect_scenes` on `config`, writing `out`, one thread, with its stderr piped.
fn spawn_detect_scenes(config: &Path, out: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_detect_scenes"))
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(out.join("no-data")) // the scenes come from Debian's Fashion-MNIST
        .args(["--no-download", "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`; (its exit code, or 128 + the signal that ended it; its stderr).
fn finish(child: std::process::Child) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap()),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn a_signal_stops_a_detection_run_at_a_row_with_a_checkpoint_and_it_resumes_to_the_same_bytes() {
    use std::io::BufRead;
    if !common::fashion_mnist_installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = CifarNet { in_channels: 1, image_size: 28, ..CifarNet::resnet(8) };
    let res = backbone_run(&tmp.path().join("cls"), net, 0);
    let config = scenes_config(tmp.path(), &[&res], &["scratch"], &[0], (40, 10));
    let (straight, stopped) = (tmp.path().join("straight"), tmp.path().join("stopped"));
    let (code, log) = finish(spawn_detect_scenes(&config, &straight));
    assert_eq!(code, 0, "{log}");
    // SIGTERM once iteration 2 is logged: the run stops at the next row (every iteration here).
    let mut child = spawn_detect_scenes(&config, &stopped);
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok);
    let mut log: Vec<String> = lines.by_ref().take_while(|l| !l.contains("iteration 2/40,")).collect();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    log.extend(lines);
    let (code, _) = finish(child);
    let log = log.join("\n");
    assert_eq!(code, 75, "a signal must exit with 75 (interrupted, resumable):\n{log}");
    let line = log.lines().find(|l| l.starts_with("stopped by SIGTERM")).expect(&log);
    let at: u64 =
        line.split("at iteration ").nth(1).and_then(|t| t.split(',').next()?.parse().ok()).expect(line);
    assert!((2..40).contains(&at), "{line}");
    let run = |out: &Path| RunDir { path: out.join("resnet8-scratch/seed0") };
    let checkpoint = run(&stopped).path.join(format!("ckpt-{at:08}"));
    assert!(checkpoint.join("model.safetensors").is_file(), "no checkpoint at the stop, {at}");
    assert!(!run(&stopped).path.join("final.json").exists(), "a stopped run has no record");
    let (code, log) = finish(spawn_detect_scenes(&config, &stopped));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("iteration 1/40,"), "the resumed run started again:\n{log}");
    let read = |out: &Path, f: &str| std::fs::read(run(out).path.join(f)).unwrap();
    assert!(
        read(&straight, "model.safetensors") == read(&stopped, "model.safetensors"),
        "the weights differ"
    );
    let scores = |out: &Path| {
        serde_json::from_slice::<serde_json::Value>(&read(out, "final.json")).unwrap()["scores"].clone()
    };
    assert_eq!(scores(&straight), scores(&stopped));
    println!("stopped by SIGTERM at iteration {at} of 40, resumed to the same weights and scores");
}

#[test]
fn a_backbone_that_does_not_fit_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    CifarNet { in_channels: 1, image_size: 28, ..CifarNet::resnet(8) }
        .build(&(vs.root() / "backbone"))
        .unwrap();
    let other = nn::VarStore::new(Device::Cpu);
    CifarNet::resnet(8).build(&other.root()).unwrap(); // 3 input channels
    let f = tmp.path().join("other.safetensors");
    resnet_repro::models::save_weights(&other, &f).unwrap();
    let e = resnet_repro::models::load_into(&vs, "backbone", &f).unwrap_err().to_string();
    assert!(e.contains("other.safetensors") && e.contains("conv1.weight"), "{e}");
}

#[test]
fn a_detector_from_scratch_trains_its_bn_except_in_frozen_parts() {
    let _rng = common::rng_lock();
    let set = tiny_scenes();
    let tmp = tempfile::tempdir().unwrap();
    let (mut vs, mut det) = tiny_detector(4);
    det.train_bn = true;
    let before = weights(&vs);
    let files = RunDir { path: tmp.path().join("scratch") }.files();
    train(&det, &mut vs, &set, &tiny_recipe(2), (&files, 7, "scratch"), None).unwrap();
    let after: std::collections::HashMap<String, Tensor> = weights(&vs).into_iter().collect();
    let changed = |name: &str| !before.iter().find(|(n, _)| n == name).unwrap().1.equal(&after[name]);
    for name in
        ["backbone.layer2.0.bn1.weight", "backbone.layer3.0.bn2.bias", "backbone.layer2.0.bn1.running_mean"]
    {
        assert!(changed(name), "{name} did not change: BN trains from scratch");
    }
    for name in ["backbone.bn1.weight", "backbone.bn1.bias", "backbone.conv1.weight", "backbone.fc.weight"] {
        assert!(!changed(name), "{name} changed: the stem (a frozen part) and the classifier stay");
    }
}

#[test]
fn the_released_detection_summary_is_what_its_runs_give() {
    use resnet_repro::experiment::Store;
    use resnet_repro::experiment::detect_scenes::{SceneRun, records, summary_md};
    let store = Store::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("results/detect_scenes"));
    let recs = records(&store).unwrap();
    if recs.is_empty() {
        eprintln!("SKIPPED: no detection runs released");
        return;
    }
    let md = std::fs::read_to_string(store.summary_md()).unwrap();
    assert_eq!(
        md,
        summary_md(&recs),
        "results/detect_scenes/summary.md is not what its runs give: `make results`"
    );
    // Each released run trained to its configuration's end, on a backbone whose weights it names.
    for r in &recs {
        let dir = store.root.join(format!("{}-{}", r.net, r.init)).join(format!("seed{}", r.seed));
        let cfg: SceneRun =
            toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
        assert_eq!(r.iterations, cfg.train.iterations, "{}", dir.display());
        let released =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(&cfg.backbone.run).join("model.safetensors");
        if let Some(sha) = &cfg.backbone.sha256 {
            assert_eq!(
                &resnet_repro::experiment::release::sha256(&released).unwrap(),
                sha,
                "{}",
                dir.display()
            );
        }
        let rows: Vec<DetectionRow> = read_rows(&dir.join("metrics.csv")).unwrap();
        assert_eq!(rows.last().map(|r| r.iteration), Some(r.iterations), "{}", dir.display());
    }
}
