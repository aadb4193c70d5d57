//! Our SGD (src/train/optim.rs over the shim's multi-tensor step, or its fused kernel) against
//! torch.optim.SGD (default, or fused=True): the same parameters and gradients give bit-identical
//! parameters and momentum buffers.
//! The Python side is tests/python/sgd_reference.py.

mod common;

use resnet_repro::eval::responses::forward_with_responses;
use resnet_repro::models::CifarNet;
use resnet_repro::shim::{MemoryFormat, contiguous, is_contiguous, set_memory_format};
use resnet_repro::train::optim::Sgd;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT};

#[test]
fn sgd_is_bit_identical_to_torch_optim_sgd() {
    let dir = std::env::temp_dir().join(format!("resnet-repro-sgd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    common::run_python_reference("sgd_reference.py", &[dir.as_os_str()]);
    let cases = [("paper", 0.9, 1e-4), ("decay", 0.9, 5e-4), ("plain", 0.0, 1e-4)];
    // Each case in our multi-tensor path against torch.optim.SGD's default, and in the fused
    // kernel against torch.optim.SGD(fused=True).
    for ((case, momentum, wd), fused) in cases.iter().copied().flat_map(|c| [(c, false), (c, true)]) {
        let case = if fused { format!("{case}-fused") } else { case.to_string() };
        let t: HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.join(format!("{case}.safetensors"))).unwrap().into_iter().collect();
        let n = (0..).take_while(|i| t.contains_key(&format!("init.{i}"))).count();
        let vs = nn::VarStore::new(Device::Cpu);
        // Names chosen so that the optimizer's (sorted) order is the reference's order.
        let params: Vec<Tensor> =
            (0..n).map(|i| vs.root().var_copy(&format!("p{i}"), &t[&format!("init.{i}")])).collect();
        let mut opt = Sgd::new(&vs, momentum, wd);
        opt.fused = fused;
        let lrs = Vec::<f64>::try_from(&t["lr"]).unwrap();
        for (k, lr) in lrs.iter().enumerate() {
            opt.zero_grad().unwrap();
            let loss = (0..n)
                .map(|i| (&params[i] * &t[&format!("grad.{k}.{i}")]).sum(Kind::Float))
                .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
            loss.backward();
            opt.step(*lr).unwrap();
        }
        for i in 0..n {
            let want = &t[&format!("param.{i}")];
            let diff = (&params[i] - want).abs().max().double_value(&[]);
            assert!(params[i].equal(want), "{case}: param {i} differs from torch.optim.SGD by {diff}");
            if momentum != 0.0 {
                let buf = opt.buffers[i].as_ref().expect("a momentum buffer after the first step");
                assert!(buf.equal(&t[&format!("buf.{i}")]), "{case}: momentum buffer {i}");
            } else {
                assert!(opt.buffers[i].is_none());
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zero_grad_drops_gradients_and_a_step_skips_parameters_without_one() {
    let vs = nn::VarStore::new(Device::Cpu);
    let a = vs.root().var_copy("a", &Tensor::from_slice(&[1.0f32, 2.0]));
    let b = vs.root().var_copy("b", &Tensor::from_slice(&[3.0f32]));
    let mut opt = Sgd::new(&vs, 0.9, 0.0);
    (&a * 2.0).sum(Kind::Float).backward();
    assert!(a.grad().defined() && !b.grad().defined());
    opt.step(0.5).unwrap();
    assert_eq!(Vec::<f32>::try_from(&a).unwrap(), [0.0, 1.0]);
    assert_eq!(Vec::<f32>::try_from(&b).unwrap(), [3.0]);
    assert!(opt.buffers[1].is_none(), "no buffer for a parameter never updated");
    opt.zero_grad().unwrap();
    assert!(!a.grad().defined());
}

#[test]
fn channels_last_layout_gives_the_same_network() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = CifarNet::resnet(20).build(&vs.root()).unwrap();
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let before = net.forward_t(&x, true);
    set_memory_format(&vs, MemoryFormat::ChannelsLast).unwrap();
    for (name, v) in vs.variables() {
        if v.dim() == 4 {
            assert!(is_contiguous(&v, MemoryFormat::ChannelsLast), "{name}");
        }
    }
    let x_cl = contiguous(&x, MemoryFormat::ChannelsLast).unwrap();
    assert!(
        is_contiguous(&x_cl, MemoryFormat::ChannelsLast) && !is_contiguous(&x, MemoryFormat::ChannelsLast)
    );
    assert!(x_cl.equal(&x), "same values, another layout");
    let after = net.forward_t(&x_cl, true);
    let (_, responses) = forward_with_responses(&net, &x_cl);
    assert!(
        responses.iter().all(|r| is_contiguous(r, MemoryFormat::ChannelsLast)),
        "the layout carries through"
    );
    // Relative to the logits' scale: NHWC kernels sum in another order (~1e-6), a layout that
    // scrambled the channels would change them by about their own size.
    let diff = (&after - &before).abs().max().double_value(&[]) / before.abs().max().double_value(&[]);
    assert!(diff < 1e-4, "logits differ by {diff} of their scale");
    // An error from libtorch comes back as an error, not an abort.
    let e = contiguous(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)), MemoryFormat::ChannelsLast)
        .unwrap_err();
    assert!(format!("{e:#}").contains("rank 4"), "{e:#}");
}
