//! The ImageNet pipeline on a small ImageNet-layout folder written by tests/python/imagenet_fixture.py
//! (JPEGs of a few sizes, grey and CMYK, a PNG named .JPEG, an RGBA PNG, a broken file): class
//! index, decoding against PIL, augmentation bounds, the test protocols against torchvision, top-k,
//! the loader, BN re-estimation, and a few training iterations end to end.

use resnet_repro::data::folder::*;
use resnet_repro::data::loader::{LoaderOptions, TrainLoader, epoch_order};
use resnet_repro::data::transform::*;
use resnet_repro::data::{EvalGeometry, Protocol};
use resnet_repro::eval::views::*;
use resnet_repro::eval::{reestimate_bn, topk_wrong};
use resnet_repro::models::ImageNetNet;
use resnet_repro::shim::MemoryFormat;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tch::{Device, Kind, Tensor, nn};

/// The fixture folder, written once per test binary.
fn fixture() -> &'static Path {
    static F: OnceLock<tempfile::TempDir> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let py = std::env::var("RESNET_REPRO_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/imagenet_fixture.py");
        let out = std::process::Command::new(&py)
            .arg(&script)
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs Python 3 with torch, torchvision and Pillow to write its fixture \
                     ({py} {}: {e}); `make test` installs them (scripts/with-torch), or set RESNET_REPRO_PYTHON",
                    script.display()
                )
            });
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
    .path()
}

fn root() -> PathBuf {
    fixture().join("imagenet")
}

/// PIL's and torchvision's outputs for the fixture.
fn references() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture().join("reference.safetensors")).unwrap().into_iter().collect()
}

fn to_tensor(img: &image::RgbImage) -> Tensor {
    Tensor::from_slice(img.as_raw()).view([i64::from(img.height()), i64::from(img.width()), 3])
}

/// A view (HWC, normalised with mean 0 and std 1) as a CHW tensor in [0, 1], like ToTensor.
fn view_chw(v: &View) -> Tensor {
    Tensor::from_slice(&v.data).view([i64::from(v.height), i64::from(v.width), 3]).permute([2, 0, 1])
}

const RAW: Normalize = Normalize { mean: [0.0; 3], std: [1.0; 3] };

#[test]
fn class_index_is_the_sorted_folder_names_and_val_must_match() {
    let train = ImageFolder::scan(&root().join("train"), Subset::default()).unwrap();
    assert_eq!(train.classes, ["n01000000", "n02000000", "n03000000"]);
    assert_eq!(train.len(), 3 * 7, "7 images per class; notes.txt is not one");
    assert!(train.samples.windows(2).all(|w| w[0].1 <= w[1].1), "grouped by class in index order");
    let (path, class) = &train.samples[0];
    assert_eq!((path.parent().unwrap().file_name().unwrap().to_str().unwrap(), *class), ("n01000000", 0));
    let sub =
        ImageFolder::scan(&root().join("train"), Subset { classes: Some(2), images_per_class: Some(3) })
            .unwrap();
    assert_eq!((sub.classes.len(), sub.len()), (2, 6));
    let val = ImageFolder::scan(&root().join("val"), Subset::default()).unwrap();
    val.check_same_classes(&train).unwrap();
    let e = format!("{:#}", sub.check_same_classes(&train).unwrap_err());
    assert!(e.contains("n03000000") && e.contains("must be the same"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    train.write_class_index(&dir.path().join("class_index.csv")).unwrap();
    let text = std::fs::read_to_string(dir.path().join("class_index.csv")).unwrap();
    assert_eq!(text, "index,class\n0,n01000000\n1,n02000000\n2,n03000000\n");
    let e = format!("{:#}", ImageFolder::scan(&root().join("nothing"), Subset::default()).unwrap_err());
    assert!(e.contains("nothing") && e.contains("train/<wnid>"), "{e}");
}

#[test]
fn decoded_pixels_match_pil_in_every_colour_mode() {
    let base = fixture();
    let refs = references();
    for (name, max_mean_diff) in [
        ("rgb_wide.JPEG", 1.5),
        ("grey.JPEG", 0.5),
        ("cmyk.JPEG", 2.0),
        ("png_named.JPEG", 0.0),
        ("rgba.png", 0.0),
        ("small.jpg", 1.5),
    ] {
        let path = base.join("imagenet/train/n02000000").join(name);
        let ours = to_tensor(&decode_rgb(&path).unwrap_or_else(|e| panic!("{name}: {e:#}")));
        let pil = &refs[&format!("imagenet|train|n02000000|{name}")];
        assert_eq!(ours.size(), pil.size(), "{name}");
        let diff = (ours.to_kind(Kind::Float) - pil.to_kind(Kind::Float)).abs();
        let (mean, max) = (diff.mean(Kind::Float).double_value(&[]), diff.max().double_value(&[]));
        println!("{name}: mean |ours - PIL| {mean:.3}, max {max}");
        assert!(mean <= max_mean_diff, "{name}: mean difference {mean} from PIL's decode (max {max})");
    }
}

#[test]
fn a_broken_image_is_an_error_naming_it_or_is_skipped_and_counted() {
    let base = fixture().join("corrupt");
    let broken = base.join("train/n01000000/broken.JPEG");
    let e = format!("{:#}", decode_rgb(&broken).unwrap_err());
    assert!(e.contains("broken.JPEG"), "{e}");
    let folder = Arc::new(ImageFolder::scan(&base.join("train"), Subset::default()).unwrap());
    let small = TrainTransform { min_side: 64, max_side: 80, crop: 56, ..TrainTransform::default() };
    let opts = |skip| LoaderOptions {
        batch_size: 2,
        threads: 2,
        prefetch: 1,
        seed: 0,
        skip_corrupt: skip,
        part: (0, 1),
    };
    let mut strict = TrainLoader::start(folder.clone(), small.clone(), opts(false), 0, &[]).unwrap();
    let e = format!("{:#}", strict.next_batch().err().expect("an error"));
    assert!(e.contains("broken.JPEG") && e.contains("--skip-corrupt"), "{e}");
    let mut lenient = TrainLoader::start(folder.clone(), small.clone(), opts(true), 0, &[]).unwrap();
    let batches: Vec<_> = (0..3).map(|_| lenient.next_batch().unwrap()).collect();
    for b in &batches {
        assert_eq!(b.labels.len(), 2);
        assert!(b.pixels.iter().all(|v| v.is_finite()));
    }
    let broken_index = folder.samples.iter().position(|(p, _)| p.ends_with("broken.JPEG")).unwrap();
    assert_eq!(lenient.skipped(), [broken_index], "one distinct broken file, however often it is met");
    // A loader resumed with the broken file known (from a checkpoint) counts it once, not again,
    // and its batches are those of the loader that found it.
    let mut resumed = TrainLoader::start(folder, small, opts(true), 1, &[broken_index]).unwrap();
    for b in &batches[1..] {
        assert_eq!(resumed.next_batch().unwrap().pixels, b.pixels);
    }
    assert_eq!(resumed.skipped(), [broken_index]);
}

#[test]
fn training_transform_stays_in_bounds_flips_exactly_and_shifts_colour_by_the_pca() {
    let img = decode_rgb(&root().join("train/n01000000/rgb_wide.JPEG")).unwrap();
    let t = TrainTransform::default();
    let mut rng = resnet_repro::data::augment::rng_for(3, b"test-transform..", 0);
    let mut resizer = fast_image_resize::Resizer::new();
    let n = (224 * 224 * 3) as usize;
    for _ in 0..50 {
        let d = t.draw(&mut rng);
        assert!(
            (256..=480).contains(&d.side) && (0.0..1.0).contains(&d.crop_x) && (0.0..1.0).contains(&d.crop_y)
        );
        let mut out = vec![0f32; n];
        t.apply(&img, &d, &mut resizer, &mut out).unwrap();
        // Mirror: the same draw with the flip toggled gives the image mirrored left-right.
        let mut mirrored = vec![0f32; n];
        t.apply(&img, &TrainDraw { flip: !d.flip, ..d }, &mut resizer, &mut mirrored).unwrap();
        let a = Tensor::from_slice(&out).view([224, 224, 3]);
        let b = Tensor::from_slice(&mirrored).view([224, 224, 3]);
        assert!(a.equal(&b.flip([1])), "flip");
        // Lighting adds the same shift to every pixel of a channel.
        let mut plain = vec![0f32; n];
        t.apply(&img, &TrainDraw { alpha: [0.0; 3], ..d }, &mut resizer, &mut plain).unwrap();
        let shift = lighting_shift(d.alpha);
        let delta = a - Tensor::from_slice(&plain).view([224, 224, 3]);
        for c in 0..3 {
            let ch = delta.select(2, c);
            let (lo, hi) = (ch.min().double_value(&[]), ch.max().double_value(&[]));
            assert!(
                (lo - f64::from(shift[c as usize])).abs() < 1e-5 && (hi - lo) < 1e-5,
                "channel {c}: {lo}..{hi}"
            );
        }
    }
    // The crop never leaves the resized image: the extreme draws take its corners.
    let mut corner = |fx, fy| {
        let mut out = vec![0f32; n];
        let d = TrainDraw { side: 256, crop_x: fx, crop_y: fy, flip: false, alpha: [0.0; 3] };
        t.apply(&img, &d, &mut resizer, &mut out).unwrap();
        Tensor::from_slice(&out).view([224, 224, 3])
    };
    let (tl, br) = (corner(0.0, 0.0), corner(0.999_999, 0.999_999));
    let full = resize_region(&img, (341, 256), (0, 0, 341, 256), &mut resizer).unwrap();
    let full = (Tensor::from_slice(&full).view([256, 341, 3]).to_kind(Kind::Float) / 255.0)
        - Tensor::from_slice(&Normalize::PAPER.mean).view([1, 1, 3]);
    let near = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    assert!(near(&tl, &full.narrow(0, 0, 224).narrow(1, 0, 224)) < 2.0 / 255.0);
    assert!(near(&br, &full.narrow(0, 32, 224).narrow(1, 117, 224)) < 2.0 / 255.0);
}

#[test]
fn resize_follows_torchvision() {
    assert_eq!(resized_size(500, 375, 256), (341, 256));
    assert_eq!(resized_size(375, 500, 256), (256, 341));
    assert_eq!(resized_size(100, 80, 256), (320, 256));
    assert_eq!(resized_size(300, 300, 224), (224, 224));
}

#[test]
fn centre_and_ten_crops_match_torchvision() {
    let refs = references();
    let mut resizer = fast_image_resize::Resizer::new();
    let g = EvalGeometry::default();
    assert_eq!(five_crop_origins(341, 256, 224), [(0, 0), (117, 0), (0, 32), (117, 32), (58, 16)]);
    for name in ["rgb_wide.JPEG", "rgb_tall.JPEG"] {
        let img = decode_rgb(&root().join("val/n01000000").join(name)).unwrap();
        let center = test_views(&img, Protocol::Center, &g, &RAW, &mut resizer).unwrap();
        assert_eq!(center.len(), 1);
        let diff = (view_chw(&center[0]) - &refs[&format!("center|{name}")]).abs();
        let (mean, max) = (diff.mean(Kind::Float).double_value(&[]), diff.max().double_value(&[]));
        println!(
            "{name} centre crop: mean |ours - torchvision| {:.4}/255, max {:.1}/255",
            mean * 255.0,
            max * 255.0
        );
        assert!(mean < 0.5 / 255.0 && max < 4.0 / 255.0, "{name}: mean {mean}, max {max}");
        // 10-crop: the five crops, then the five crops of the mirrored image, in torchvision's order.
        let ten = test_views(&img, Protocol::TenCrop, &g, &RAW, &mut resizer).unwrap();
        assert_eq!(ten.len(), 10);
        let tv = &refs[&format!("tencrop|{name}")];
        for (i, v) in ten.iter().enumerate() {
            let d = (view_chw(v) - tv.get(i as i64)).abs().mean(Kind::Float).double_value(&[]);
            assert!(d < 0.5 / 255.0, "{name}: view {i} differs from torchvision's by {d}");
        }
    }
}

#[test]
fn multi_scale_views_are_whole_images_at_each_shorter_side() {
    let mut resizer = fast_image_resize::Resizer::new();
    let img = decode_rgb(&root().join("val/n01000000/rgb_wide.JPEG")).unwrap();
    let views = test_views(&img, Protocol::MultiScale, &EvalGeometry::default(), &RAW, &mut resizer).unwrap();
    let sizes: Vec<(u32, u32)> = views.iter().map(|v| (v.width, v.height)).collect();
    let expected = [(298, 224), (341, 256), (512, 384), (640, 480), (853, 640)];
    assert_eq!(sizes, expected.iter().flat_map(|&s| [s, s]).collect::<Vec<_>>());
    // The second of each pair is the mirror of the first.
    assert!(view_chw(&views[5]).equal(&view_chw(&views[4]).flip([2])));
}

#[test]
fn top1_and_top5_errors_count_the_right_images() {
    let probs = Tensor::from_slice(&[
        0.9f32, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, // class 0 first
        0.1, 0.2, 0.3, 0.15, 0.14, 0.11, 0.0, // class 2 first; class 6 ranks 7th
        0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.0, // class 5 first; class 2 ranks 4th
    ])
    .view([3, 7]);
    let labels = Tensor::from_slice(&[0i64, 6, 2]);
    assert_eq!(topk_wrong(&probs, &labels), (2, 1));
}

#[test]
fn loader_batches_are_a_function_of_seed_and_iteration() {
    let folder = Arc::new(ImageFolder::scan(&root().join("train"), Subset::default()).unwrap());
    let t = TrainTransform { min_side: 72, max_side: 96, crop: 64, ..TrainTransform::default() };
    let opts =
        LoaderOptions { batch_size: 4, threads: 2, prefetch: 2, seed: 5, skip_corrupt: false, part: (0, 1) };
    let mut from_zero = TrainLoader::start(folder.clone(), t.clone(), opts.clone(), 0, &[]).unwrap();
    assert_eq!(from_zero.batches_per_epoch, 5);
    let batches: Vec<_> = (0..7).map(|_| from_zero.next_batch().unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.iteration).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
    // Resuming at 6 (in the second epoch) gives batch 6 again, pixel for pixel.
    let mut resumed = TrainLoader::start(folder.clone(), t.clone(), opts.clone(), 6, &[]).unwrap();
    let b6 = resumed.next_batch().unwrap();
    assert_eq!(b6.labels, batches[6].labels);
    assert_eq!(b6.pixels, batches[6].pixels);
    // Two replicas' parts of batch 6, one after the other, are batch 6.
    let part = |r: usize| {
        let o = LoaderOptions { part: (r, 2), ..opts.clone() };
        TrainLoader::start(folder.clone(), t.clone(), o, 6, &[]).unwrap().next_batch().unwrap()
    };
    let (p0, p1) = (part(0), part(1));
    assert_eq!(p0.labels.len(), 2);
    assert_eq!([p0.labels, p1.labels].concat(), batches[6].labels);
    assert_eq!([p0.pixels, p1.pixels].concat(), batches[6].pixels);
    let three = LoaderOptions { part: (0, 3), ..opts.clone() };
    let e = TrainLoader::start(folder.clone(), t, three, 0, &[]).err().expect("4 images in 3 parts");
    assert!(format!("{e:#}").contains("batch size 4 cannot be split into 3 equal parts"), "{e:#}");
    // The first epoch's labels are those of its order.
    let order = epoch_order(5, 0, folder.len());
    let labels: Vec<i64> = order[..4].iter().map(|&i| i64::from(folder.samples[i as usize].1)).collect();
    assert_eq!(batches[0].labels, labels);
    // As a tensor: N x 3 x H x W, channels_last.
    let (x, y) = batches[0].to_tensors(Device::Cpu);
    assert_eq!(x.size(), [4, 3, 64, 64]);
    assert!(resnet_repro::shim::is_contiguous(&x, MemoryFormat::ChannelsLast));
    assert_eq!(y.size(), [4]);
}

#[test]
fn bn_reestimation_averages_the_batch_statistics() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = ImageNetNet { num_classes: 3, ..ImageNetNet::resnet(18, resnet_repro::models::Shortcut::B) }
        .build(&vs.root())
        .unwrap();
    let batches: Vec<Tensor> = (0..3)
        .map(|i| Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu)) * (1.0 + i as f64))
        .collect();
    let n = reestimate_bn(&net, &vs, batches.iter().map(|b| Ok(b.shallow_clone())), MemoryFormat::Contiguous)
        .unwrap();
    assert_eq!(n, 12);
    // bn1 follows conv1: its statistics are the mean over batches of conv1's per-batch mean and
    // (unbiased) variance.
    let conv1 = &net.stem_conv_bn().conv;
    let (mut mean, mut var) =
        (Tensor::zeros([64], (Kind::Float, Device::Cpu)), Tensor::zeros([64], (Kind::Float, Device::Cpu)));
    for b in &batches {
        let y = conv1.forward(b);
        mean += y.mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float) / 3.0;
        var += y.var_dim([0i64, 2, 3].as_slice(), true, false) / 3.0;
    }
    let v = vs.variables();
    let d_mean = (&v["bn1.running_mean"] - mean).abs().max().double_value(&[]);
    let d_var = ((&v["bn1.running_var"] - &var).abs() / var.abs()).max().double_value(&[]);
    // Relative 1e-4: float32 convolutions in another order give ~1e-6; the statistics of one
    // batch instead of the three (scaled 1x, 2x, 3x) would be off by 50% or more.
    assert!(d_mean < 1e-4 && d_var < 1e-4, "mean off by {d_mean}, var by {d_var} (relative)");
}

#[test]
fn a_few_iterations_end_to_end_write_metrics_and_evaluations() {
    use resnet_repro::data::DataOptions;
    use resnet_repro::data::loader::LoaderSettings;
    use resnet_repro::experiment::summary::summarize;
    use resnet_repro::experiment::{Experiment, RunStatus, RunnerOptions, Store, run_experiment};
    use resnet_repro::paper::Measure;
    use resnet_repro::train::TrainOptions;
    let out = tempfile::tempdir().unwrap();
    let exp: Experiment = toml::from_str(
        r#"
        name = "test"
        preset = "quick"
        [data]
        dataset = "imagenet"
        val_images = 4
        eval_batch_size = 4
        final_protocols = ["ten-crop", "multi-scale"]
        bn_reestimate_images = 12
        transform = { min_side = 72, max_side = 96, crop = 64 }
        geometry = { resize = 72, crop = 64, scales = [64, 80] }
        [train]
        batch_size = 6
        lr = 0.1
        iterations = 4
        milestones = [2]
        log_every = 2
        eval_every = 2
        checkpoint_every = 2
        [[runs]]
        depth = 18
        residual = true
        shortcut = "A"
        [[runs]]
        depth = 18
        residual = false
        [[runs]]
        depth = 18
        residual = true
        shortcut = "B"
        "#,
    )
    .unwrap();
    exp.validate().unwrap();
    let opts = RunnerOptions {
        store: Store::new(out.path()),
        data: DataOptions::new(fixture()), // found through <dir>/imagenet
        loader: LoaderSettings { threads: 2, prefetch: 2, skip_corrupt: false },
        train: TrainOptions { progress_bar: false, ..TrainOptions::new(Device::Cpu) },
        only: vec![],
        estimate: None,
    };
    let outcomes = run_experiment(&exp, &opts).unwrap();
    assert_eq!(outcomes.len(), 3);
    let dir = out.path().join("imagenet-quick/resnet18-A/seed0");
    let rows = resnet_repro::train::metrics::read_metrics(&dir.join("metrics.csv")).unwrap();
    assert_eq!(rows.iter().map(|r| r.iteration).collect::<Vec<_>>(), [2, 4]);
    assert!(
        rows.iter().all(|r| r.val_error.is_some() && r.val_top5_error.is_some() && r.test_error.is_none())
    );
    assert_eq!(std::fs::read_to_string(dir.join("class_index.csv")).unwrap().lines().count(), 4);
    let evals = &outcomes.iter().find(|o| o.run.net.name() == "resnet18-A").unwrap().evals;
    assert_eq!(
        evals.iter().map(|e| (e.protocol, e.images, e.views)).collect::<Vec<_>>(),
        [(Protocol::TenCrop, 6, 10), (Protocol::MultiScale, 6, 4)]
    );
    assert!(evals.iter().all(|e| e.bn_reestimated_over == Some(12) && (0.0..=100.0).contains(&e.top1_error)));
    assert!(evals.iter().all(|e| e.top5_error == 0.0), "3 classes: every image is in the top 5");
    // The summary has them in the paper's order; a second run skips everything.
    let rows = summarize(&opts.store.runs().unwrap()).unwrap();
    let order: Vec<_> = rows.iter().map(|r| (r.net.as_str(), r.measure)).collect();
    assert_eq!(
        order,
        [
            ("plain18", Measure::TenCrop),
            ("plain18", Measure::MultiScale),
            ("resnet18-A", Measure::TenCrop),
            ("resnet18-A", Measure::MultiScale),
            ("resnet18-B", Measure::TenCrop),
            ("resnet18-B", Measure::MultiScale)
        ]
    );
    assert!(rows.iter().all(|r| r.top5 == Some(0.0) && r.bn_reestimated && r.diff.is_none()));
    let again = run_experiment(&exp, &opts).unwrap();
    assert!(again.iter().all(|o| matches!(o.status, RunStatus::AlreadyDone(_)) && o.evals.len() == 2));
    // Figure 4 for the plain and option-A nets, the Table 3 curves for the option-B one; not blank.
    let plots = out.path().join("plots");
    let written = resnet_repro::report::render_store(&opts.store, &plots).unwrap();
    let names: Vec<_> =
        written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["fig4_imagenet-quick.png", "table3_curves_imagenet-quick.png"]);
    for path in &written {
        let img = image::open(path).unwrap().to_rgb8();
        let coloured =
            img.pixels().filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 60).count();
        assert!(coloured > 500, "{}: only {coloured} coloured pixels", path.display());
    }
}
