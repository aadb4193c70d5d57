//! Our trained networks outside the suite: python/resnet_repro_torch.py builds the network a run
//! describes in plain PyTorch and loads its safetensors, and its ONNX export runs in onnxruntime;
//! both give our logits on a batch (to 1e-4, the torchvision check's standard), for a plain and a
//! residual net with trained BN statistics (shortcut options A, B and C), grey and colour inputs.

mod common;

use resnet_repro::experiment::{Experiment, RunDir};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn experiment(residual: bool, shortcut: char, dataset: &str) -> Experiment {
    let text = format!(
        "name = \"x\"\npreset = \"quick\"\nseeds = [0]\n[data]\n{dataset}\neval_batch_size = 8\n[train]\n\
         batch_size = 16\nlr = 0.1\nmilestones = []\niterations = 6\nlog_every = 2\neval_every = 2\n\
         checkpoint_every = 2\n[[runs]]\ndepth = 8\nresidual = {residual}\nshortcut = \"{shortcut}\"\n"
    );
    toml::from_str(&text).unwrap()
}

/// Our logits and the Python side's (PyTorch, ONNX) on a batch of 5 random inputs.
fn logits_three_ways(run: &RunDir, out: &Path) -> [Tensor; 3] {
    let cfg = run.config().unwrap();
    let resnet_repro::models::NetSpec::Cifar(net) = &cfg.net else { panic!() };
    let x = Tensor::randn([5, net.in_channels, net.image_size, net.image_size], (Kind::Float, Device::Cpu));
    let batch = out.join("batch.safetensors");
    Tensor::write_safetensors(&[("input", &x)], &batch).unwrap();
    let loaded = run.load_net(&cfg, Device::Cpu).unwrap();
    let xs = resnet_repro::shim::contiguous(&x, loaded.format).unwrap();
    let ours = tch::no_grad(|| tch::nn::ModuleT::forward_t(&loaded.net, &xs, false));
    let threads = tch::get_num_threads().to_string();
    let args = [run.path.as_os_str(), batch.as_os_str(), out.as_os_str(), std::ffi::OsStr::new(&threads)];
    common::run_python_reference("export_check.py", &args);
    let read = |f: &str| Tensor::read_safetensors(out.join(f)).unwrap().remove(0).1;
    [ours, read("torch.safetensors"), read("onnx.safetensors")]
}

#[test]
fn pytorch_and_onnx_give_our_logits_for_a_trained_run() {
    let _rng = common::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    // Fashion-MNIST's shape (1 channel) from the fixture; colour (3) from a folder of PNGs.
    let opts = common::fixture_runner(dir.path(), &dir.path().join("runs"));
    for split in ["train", "test"] {
        for (c, class) in ["red", "blue"].iter().enumerate() {
            let d = dir.path().join("data/colour").join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..8u32 {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    image::Rgb([(x * 7 + i) as u8, (y * 5) as u8, if c == 0 { 40 } else { 220 }])
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let colour = "dataset = \"folder\"\npath = \"colour\"";
    let grey = "dataset = \"fashion-mnist\"";
    let nets =
        [(false, 'A', grey), (true, 'A', grey), (true, 'B', grey), (true, 'C', grey), (true, 'A', colour)];
    for (residual, shortcut, data) in nets {
        let out =
            resnet_repro::experiment::run_experiment(&experiment(residual, shortcut, data), &opts).unwrap();
        let run = opts.store.run(&out[0].run);
        let check = dir.path().join(format!("check-{residual}-{shortcut}-{}", out[0].run.data.dataset()));
        std::fs::create_dir_all(&check).unwrap();
        let [ours, torch, onnx] = logits_three_ways(&run, &check);
        let classes = if data == colour { 2 } else { 10 };
        assert_eq!(ours.size(), [5, classes]);
        let diff = |a: &Tensor| (a - &ours).abs().max().double_value(&[]);
        let spread = ours.abs().max().double_value(&[]);
        println!(
            "residual {residual} ({shortcut}): |ours| up to {spread:.3}; PyTorch {:.2e}, ONNX {:.2e} apart",
            diff(&torch),
            diff(&onnx)
        );
        assert!(diff(&torch) < 1e-4, "PyTorch's logits differ by {}", diff(&torch));
        assert!(diff(&onnx) < 1e-4, "ONNX's logits differ by {}", diff(&onnx));
        assert!(spread > 1e-2, "logits of a network that learnt nothing");
        assert!(check.join("model.onnx").is_file());
    }
}
