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
use resnet_repro::train::{SgdSettings, Trainer};
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
    let mut tr = Trainer::with_format(
        &net,
        SgdSettings { momentum: HYPER[1], weight_decay: HYPER[2] },
        7,
        Device::Cpu,
        format,
    )
    .unwrap();
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
    // (case, residual, our layout, bit-identical?): in NCHW both sides run the same kernels on the
    // same numbers in the same order, so the results are bit-identical; channels_last (our CPU
    // default) runs the NHWC kernels, whose sums go in another order: close, not equal, and
    // "close" is measured against what the dozen steps changed (a step unlike PyTorch's, another
    // rate or momentum, moves the weights by a share of that).
    let cases = [
        ("plain8", false, MemoryFormat::Contiguous, true),
        ("resnet8", true, MemoryFormat::Contiguous, true),
        ("resnet8-channels-last", true, MemoryFormat::ChannelsLast, false),
    ];
    tch::manual_seed(0);
    let ours: Vec<_> = cases.iter().map(|&(c, r, f, _)| ours(&dir, c, r, f)).collect();
    let threads = tch::get_num_threads().to_string();
    let mut args = vec![dir.as_os_str(), std::ffi::OsStr::new(&threads)];
    args.extend(cases.iter().map(|c| std::ffi::OsStr::new(c.0)));
    common::run_python_reference("lockstep_reference.py", &args);
    for ((case, _, _, exact), (losses, finals, logits)) in cases.iter().zip(ours) {
        let theirs = read(&dir.join(format!("{case}.torch.safetensors")));
        let init = read(&dir.join(format!("{case}.safetensors")));
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
        if *exact {
            assert_eq!(loss_diff, 0.0, "{case}: losses differ by {loss_diff:.3e}");
            assert_eq!(weight_diff.1, 0.0, "{case}: {} differs by {:.3e}", weight_diff.0, weight_diff.1);
            assert_eq!(logit_diff, 0.0, "{case}: test logits differ by {logit_diff:.3e}");
            continue;
        }
        let pairs = || finals.iter().map(|(name, t)| (t, &theirs[&format!("final.{name}")]));
        // What the steps changed: the least any tensor moved, relative to its scale.
        let change = finals
            .iter()
            .map(|(name, t)| common::relative_difference_of([(&init[&format!("init.{name}")], t)]))
            .fold(f64::INFINITY, f64::min);
        common::assert_far_below(
            common::relative_difference_of(pairs()),
            change,
            &format!("{case}: weights"),
        );
        let loss_change = (losses[0] - losses[STEPS as usize - 1]).abs();
        common::assert_far_below(loss_diff, loss_change, &format!("{case}: losses"));
        let logit_scale = theirs["test_logits"].abs().max().double_value(&[]);
        common::assert_far_below(
            logit_diff / logit_scale,
            change,
            &format!("{case}: test logits (relative)"),
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
