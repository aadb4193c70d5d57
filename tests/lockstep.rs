//! Training in lockstep with PyTorch: our trainer (net, BN in train mode, loss, SGD with momentum
//! and weight decay on every parameter, BN running statistics, eval mode) and the cross-check's
//! PyTorch side (bench/pytorch_crosscheck.py's model, torch.optim.SGD), started from the same
//! weights and fed the same batches for a dozen steps, give the same losses, weights, BN statistics
//! and test logits: bit for bit in PyTorch's layout. With this, what can still differ between the two sides of `make crosscheck` is
//! only what is random: the initial draws and the data stream, whose distributions are tested in
//! tests/models.rs and tests/data.rs. The Python side is tests/python/lockstep_reference.py.

mod common;

use resnet_repro::models::{CifarNet, HeInit, NetSpec};
use resnet_repro::shim::{MemoryFormat, contiguous};
use resnet_repro::train::trainer::Trainer;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn::ModuleT};

const STEPS: i64 = 12;
const BATCH: i64 = 32;
const SIZE: i64 = 16;
const HYPER: [f64; 3] = [0.1, 0.9, 1e-4]; // lr, momentum, weight decay: the cross-check's

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

/// Our side of one case: writes `<dir>/<case>.safetensors` for the reference and returns our
/// losses, final variables and test logits.
fn ours(
    dir: &Path,
    case: &str,
    residual: bool,
    format: MemoryFormat,
) -> (Vec<f64>, HashMap<String, Tensor>, Tensor) {
    let net = CifarNet { in_channels: 1, image_size: SIZE, init: HeInit::FanIn, ..CifarNet::resnet(8) };
    let net = NetSpec::Cifar(CifarNet { residual, ..net });
    let mut tr = Trainer::with_format(&net, (HYPER[1], HYPER[2]), 7, Device::Cpu, format).unwrap();
    let mut file: Vec<(String, Tensor)> =
        tr.vs.variables().into_iter().map(|(n, t)| (format!("init.{n}"), t.contiguous().copy())).collect();
    // Images like centred Fashion-MNIST crops: roughly unit scale, some structure per class.
    let ys = Tensor::randint(10, [STEPS, BATCH], (Kind::Int64, Device::Cpu));
    let xs = Tensor::randn([STEPS, BATCH, 1, SIZE, SIZE], (Kind::Float, Device::Cpu))
        + ys.view([STEPS, BATCH, 1, 1, 1]).to_kind(Kind::Float) * 0.1;
    let test_x = Tensor::randn([64, 1, SIZE, SIZE], (Kind::Float, Device::Cpu));
    let mut losses = Vec::new();
    for k in 0..STEPS {
        let (x, y) = (xs.get(k), ys.get(k));
        let (loss, _) = tr.step(&x, &y, HYPER[0]).unwrap();
        losses.push(loss.double_value(&[]));
        file.push((format!("x.{k}"), x));
        file.push((format!("y.{k}"), y));
    }
    let logits = tch::no_grad(|| tr.net.forward_t(&contiguous(&test_x, format).unwrap(), false));
    file.push(("test_x".into(), test_x));
    file.push(("hyper".into(), Tensor::from_slice(&HYPER)));
    let named: Vec<(&str, &Tensor)> = file.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, dir.join(format!("{case}.safetensors"))).unwrap();
    let finals = tr.vs.variables().into_iter().map(|(n, t)| (n, t.contiguous())).collect();
    (losses, finals, logits.contiguous())
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_dozen_training_steps_match_pytorch_losses_weights_statistics_and_logits() {
    let dir = std::env::temp_dir().join(format!("resnet-repro-lockstep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // (case, residual, our layout, tolerance): in NCHW both sides run the same kernels on the same
    // numbers in the same order, so the results are bit-identical; channels_last (our CPU default)
    // runs the NHWC kernels, whose sums go in another order: close (~1e-6 after 12 steps), not equal.
    let cases = [
        ("plain8", false, MemoryFormat::Contiguous, 0.0),
        ("resnet8", true, MemoryFormat::Contiguous, 0.0),
        ("resnet8-channels-last", true, MemoryFormat::ChannelsLast, 1e-4),
    ];
    tch::manual_seed(0);
    let ours: Vec<_> = cases.iter().map(|&(c, r, f, _)| ours(&dir, c, r, f)).collect();
    let threads = tch::get_num_threads().to_string();
    let mut args = vec![dir.as_os_str(), std::ffi::OsStr::new(&threads)];
    args.extend(cases.iter().map(|c| std::ffi::OsStr::new(c.0)));
    common::run_python_reference("lockstep_reference.py", &args);
    for ((case, _, _, tol), (losses, finals, logits)) in cases.iter().zip(ours) {
        let theirs = read(&dir.join(format!("{case}.torch.safetensors")));
        let their_losses = Vec::<f64>::try_from(&theirs["loss"]).unwrap();
        assert_eq!(their_losses.len(), STEPS as usize);
        let loss_diff = losses.iter().zip(&their_losses).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let mut weight_diff = (String::new(), 0.0f64);
        for (name, t) in &finals {
            let d = max_abs(t, &theirs[&format!("final.{name}")]);
            if d > weight_diff.1 {
                weight_diff = (name.clone(), d);
            }
        }
        let logit_diff = max_abs(&logits, &theirs["test_logits"]);
        println!(
            "{case}: losses {:.4} -> {:.4}; max |ours - PyTorch|: loss {loss_diff:.2e}, weights {:.2e} ({}), \
             test logits {logit_diff:.2e}",
            losses[0],
            losses[STEPS as usize - 1],
            weight_diff.1,
            weight_diff.0
        );
        assert!(losses[STEPS as usize - 1] < losses[0], "{case}: training did not lower the loss");
        assert!(loss_diff <= *tol, "{case}: losses differ by {loss_diff:.3e} (tolerance {tol:.0e})");
        assert!(weight_diff.1 <= *tol, "{case}: {} differs by {:.3e}", weight_diff.0, weight_diff.1);
        assert!(logit_diff <= 10.0 * tol, "{case}: test logits differ by {logit_diff:.3e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
