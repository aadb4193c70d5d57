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
        stderr.contains("error: ")
            && stderr.contains("broken.png: not a decodable image")
            && stderr.matches("broken.png").count() == 1
            && stderr.matches("Invalid PNG signature").count() == 1
            && stderr.contains("1 of 2 files could not be classified"),
        "{stderr}"
    );
    // A model.safetensors with its config.toml (a release's files) gives the same lines: the class
    // names and the mean are found beside the config.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["config.toml", "class_index.csv", "data_mean.safetensors"] {
        std::fs::copy(run.path.join(f), copy.join(f)).unwrap();
    }
    std::fs::copy(&weights, copy.join("model.safetensors")).unwrap();
    let loose = std::process::Command::new(env!("CARGO_BIN_EXE_predict"))
        .args(["--device", "cpu", "--top", "2", "--data-dir", "/nonexistent", "--weights"])
        .arg(copy.join("model.safetensors"))
        .arg("--config")
        .arg(copy.join("config.toml"))
        .arg(&files[0])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&loose.stdout), stdout, "{}", String::from_utf8_lossy(&loose.stderr));
    let json = bin(&["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["top"][0]["index"], got[0].top[0].index);
    assert!(v[1]["error"].as_str().unwrap().contains("broken.png"));
}

#[test]
fn predict_prepares_a_file_for_an_imagenet_net_as_the_centre_crop_protocol_does() {
    use resnet_repro::data::{Protocol, folder::decode};
    use resnet_repro::eval::views::test_views;
    let _rng = common::rng_lock();
    tch::manual_seed(3);
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir { path: dir.path().join("run") };
    std::fs::create_dir_all(&run.path).unwrap();
    let text = "experiment = \"t\"\npreset = \"quick\"\nseed = 0\n[net]\nfamily = \"imagenet\"\ndepth = 18\n\
                residual = true\nnum_classes = 3\n[train]\nbatch_size = 4\nlr = 0.1\nmilestones = []\n\
                iterations = 1\nlog_every = 1\neval_every = 1\ncheckpoint_every = 1\n[data]\n\
                dataset = \"imagenet\"\nfinal_protocols = [\"center\"]\n";
    let config: resnet_repro::experiment::config::RunConfig = toml::from_str(text).unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = config.net.build(&vs.root()).unwrap();
    let weights = run.path.join("model.safetensors");
    vs.save(&weights).unwrap();
    std::fs::write(run.path.join("class_index.csv"), "index,class\n0,n01\n1,n02\n2,n03\n").unwrap();
    // A colour JPEG of another shape than the crop, and a grey PNG.
    let colour = dir.path().join("wide.jpg");
    image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([(x % 251) as u8, (y * 3 % 256) as u8, 77]))
        .save(&colour)
        .unwrap();
    let grey = dir.path().join("grey.png");
    image::GrayImage::from_fn(180, 260, |x, y| image::Luma([((x + 2 * y) % 256) as u8])).save(&grey).unwrap();

    let p = Predictor::new(
        config.clone(),
        &weights,
        &run,
        &resnet_repro::data::DataOptions::new(dir.path()),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(p.classes, ["n01", "n02", "n03"]);
    let got = p.predict(&[colour.clone(), grey.clone()], 3);
    let resnet_repro::data::DataConfig::ImageNet(o) = &config.data else { panic!() };
    for (g, file) in got.iter().zip([&colour, &grey]) {
        assert!(g.error.is_none(), "{g:?}");
        let img = decode(file).unwrap();
        let view = test_views(
            &img.to_rgb8(),
            Protocol::Center,
            &o.geometry,
            &o.transform.normalize,
            &mut fast_image_resize::Resizer::new(),
        )
        .unwrap()
        .remove(0);
        assert_eq!((view.width, view.height), (224, 224));
        let x = tch::Tensor::from_slice(&view.data).view([1, 224, 224, 3]).permute([0, 3, 1, 2]);
        let x = resnet_repro::shim::contiguous(&x, config.train.layout.resolve(Device::Cpu)).unwrap();
        let want = tch::no_grad(|| tch::nn::ModuleT::forward_t(&net, &x, false).softmax(1, Kind::Float));
        assert_eq!(g.top.len(), 3);
        for r in &g.top {
            let w = want.double_value(&[0, r.index as i64]);
            assert!((r.probability - w).abs() <= 1e-5 * w.max(1e-3), "{}: {r:?} against {w}", file.display());
        }
        assert!(
            g.notes.iter().any(|n| n.contains("resized to shorter side 256 and centre-cropped to 224x224")),
            "{:?}",
            g.notes
        );
    }
    assert!(!got[0].notes.iter().any(|n| n.contains("grey")), "{:?}", got[0].notes);
    assert!(got[1].notes.iter().any(|n| n == "grey converted to colour"), "{:?}", got[1].notes);
}
