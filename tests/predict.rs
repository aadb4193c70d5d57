//! `predict` (src/experiment/predict.rs): image files classified by a trained run as its test
//! protocol prepares test images (the same input, hence the same probabilities, as the test set's
//! tensors for an image written at the dataset's own size), files that differ converted and said,
//! a broken file reported while the rest are done, and the JSON output.

mod common;

use resnet_repro::experiment::predict::{Predictor, image_files};
use resnet_repro::experiment::{Experiment, RunDir};
use tch::{Device, Kind};

fn tiny() -> Experiment {
    let text = "name = \"p\"\npreset = \"quick\"\nseeds = [0]\n[data]\ndataset = \"fashion-mnist\"\n\
                eval_batch_size = 8\n[train]\nbatch_size = 16\nlr = 0.1\nmilestones = []\niterations = 20\n\
                log_every = 10\neval_every = 10\ncheckpoint_every = 10\n[[runs]]\ndepth = 8\nresidual = true\n";
    toml::from_str(text).unwrap()
}

#[test]
fn predict_gives_the_test_sets_probabilities_for_its_images_written_as_png() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let opts = common::fixture_runner(dir.path(), &dir.path().join("runs"));
    let out = resnet_repro::experiment::run_experiment(&tiny(), &opts).unwrap();
    let run: RunDir = opts.store.run(&out[0].run);
    // The test images as PNGs at their own size (28x28 grey), one in colour, one broken.
    let ds = resnet_repro::data::Dataset::load(&out[0].run.data, &opts.data).unwrap();
    let pngs = dir.path().join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    let mut files = Vec::new();
    for i in 0..4i64 {
        let px = Vec::<u8>::try_from(&ds.test.images.get(i).view([-1])).unwrap();
        let f = pngs.join(format!("{i}.png"));
        image::GrayImage::from_raw(28, 28, px).unwrap().save(&f).unwrap();
        files.push(f);
    }
    let colour = pngs.join("colour.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90]))
        .save(&colour)
        .unwrap();
    let broken = pngs.join("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    files.extend([colour.clone(), broken.clone()]);
    assert_eq!(image_files(std::slice::from_ref(&pngs)).unwrap().len(), 6, "a folder is walked");

    let weights = run.weights().unwrap().unwrap();
    let p = Predictor::new(run.config().unwrap(), &weights, &run, &opts.data, Device::Cpu).unwrap();
    assert_eq!(p.classes, resnet_repro::data::fashion_mnist::CLASSES);
    let got = p.predict(&files, 10);
    // The network on the prepared test tensors, directly.
    let loaded = run.load_net(&run.config().unwrap(), Device::Cpu).unwrap();
    let prepared = resnet_repro::data::Prepared::new(&ds, 0, Device::Cpu).unwrap();
    let x = resnet_repro::shim::contiguous(&prepared.test_x.narrow(0, 0, 4), loaded.format).unwrap();
    let want = tch::no_grad(|| tch::nn::ModuleT::forward_t(&loaded.net, &x, false).softmax(1, Kind::Float));
    for (i, g) in got.iter().take(4).enumerate() {
        assert!(g.error.is_none() && g.notes.is_empty(), "{g:?}");
        assert_eq!(g.top.len(), 10);
        let best = want.get(i as i64).argmax(0, false).int64_value(&[]) as usize;
        assert_eq!(g.top[0].index, best);
        for r in &g.top {
            let w = want.double_value(&[i as i64, r.index as i64]);
            assert!((r.probability - w).abs() <= 1e-6 * w.max(1e-3), "{i}: {r:?} against {w}");
        }
        let sum: f64 = g.top.iter().map(|r| r.probability).sum();
        assert!((sum - 1.0).abs() < 1e-5);
    }
    let c = &got[4];
    assert!(c.error.is_none(), "{c:?}");
    assert!(c.notes.iter().any(|n| n == "colour converted to grey"), "{:?}", c.notes);
    assert!(
        c.notes.iter().any(|n| n.starts_with("40x30 resized and centre-cropped to 28x28")),
        "{:?}",
        c.notes
    );
    let b = &got[5];
    assert!(b.top.is_empty() && b.error.as_ref().unwrap().contains("broken.png"), "{b:?}");

    // The binary: text, JSON, and exit status 1 for the broken file.
    let bin = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_predict"))
            .arg("--run")
            .arg(&run.path)
            .arg("--device")
            .arg("cpu")
            .args(extra)
            .arg(&files[0])
            .arg(&broken)
            .output()
            .unwrap()
    };
    let text = bin(&["--top", "2"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&text.stdout), String::from_utf8_lossy(&text.stderr));
    assert_eq!(text.status.code(), Some(1), "{stderr}");
    let first = format!("{}: {} ", files[0].display(), got[0].top[0].class);
    assert!(stdout.starts_with(&first) && stdout.lines().count() == 1, "{stdout}");
    assert!(
        stderr.contains("broken.png: error") && stderr.contains("1 of 2 files could not be classified"),
        "{stderr}"
    );
    let json = bin(&["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["top"][0]["index"], got[0].top[0].index);
    assert!(v[1]["error"].as_str().unwrap().contains("broken.png"));
}
