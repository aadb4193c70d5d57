//! The networks are the paper's: parameter counts to the unit, multiply-adds, output shapes, shortcut
//! options, initialisation, errors for impossible configurations, and weight files.
//! The exact counts are counted analytically from the architectures (conv and fc multiply-adds;
//! parameters with BN's gamma and beta and the fc bias), and torchvision's for option B.

use resnet_repro::eval::responses::forward_with_responses;
use resnet_repro::experiment::table1::NetSpec;
use resnet_repro::models::blocks::{Shortcut as S, ShortcutPath};
use resnet_repro::models::{BottleneckStride, CifarNet, ImageNetNet, ResNet, Shortcut, count_parameters};
use tch::{Device, Kind, Tensor, nn, nn::ModuleT};

fn imagenet(depth: usize, shortcut: Shortcut, placement: BottleneckStride) -> NetSpec {
    NetSpec::ImageNet(ImageNetNet { bottleneck_stride: placement, ..ImageNetNet::resnet(depth, shortcut) })
}

fn build(spec: &NetSpec) -> (nn::VarStore, ResNet) {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = spec.build(&vs.root()).unwrap();
    (vs, net)
}

/// (spec, params, computed mult-adds, the paper's FLOPs where it gives them)
fn reference_counts() -> Vec<(NetSpec, i64, f64, Option<f64>)> {
    use BottleneckStride::{Conv3x3 as V15, FirstConv1x1 as P};
    vec![
        (imagenet(18, S::B, P), 11_689_512, 1.814e9, Some(1.8e9)),
        (imagenet(34, S::B, P), 21_797_672, 3.664e9, Some(3.6e9)),
        (imagenet(50, S::B, P), 25_557_032, 3.858e9, Some(3.8e9)),
        (imagenet(101, S::B, P), 44_549_160, 7.570e9, Some(7.6e9)),
        (imagenet(152, S::B, P), 60_192_808, 11.282e9, Some(11.3e9)),
        (imagenet(50, S::B, V15), 25_557_032, 4.089e9, None),
        (imagenet(101, S::B, V15), 44_549_160, 7.801e9, None),
        (imagenet(152, S::B, V15), 60_192_808, 11.514e9, None),
        (imagenet(34, S::A, P), 21_623_848, 3.644e9, Some(3.6e9)),
        (imagenet(34, S::C, P), 22_716_840, 3.831e9, None),
        (imagenet(50, S::C, P), 40_128_552, 6.324e9, None),
        (NetSpec::ImageNet(ImageNetNet::plain(34)), 21_623_848, 3.644e9, Some(3.6e9)),
        (NetSpec::Cifar(CifarNet::resnet(20)), 269_722, 40.6e6, None),
        (NetSpec::Cifar(CifarNet::resnet(32)), 464_154, 68.9e6, None),
        (NetSpec::Cifar(CifarNet::resnet(44)), 658_586, 97.2e6, None),
        (NetSpec::Cifar(CifarNet::resnet(56)), 853_018, 125.5e6, None),
        (NetSpec::Cifar(CifarNet::resnet(110)), 1_727_962, 252.9e6, None),
        (NetSpec::Cifar(CifarNet::resnet(1202)), 19_421_274, 2.83e9, None),
        (NetSpec::Cifar(CifarNet { shortcut: S::B, ..CifarNet::resnet(20) }), 272_474, 40.6e6, None),
    ]
}

#[test]
fn parameter_counts_and_mult_adds_match_the_paper() {
    for (spec, params, computed, paper) in reference_counts() {
        let (measured_params, mult_adds) = spec.measure().unwrap();
        let name = spec.name();
        assert_eq!(measured_params, params, "{name}: parameters");
        let m = mult_adds as f64;
        assert!((m - computed).abs() / computed < 0.01, "{name}: {m:.4e} mult-adds, computed {computed:.4e}");
        if let Some(p) = paper {
            assert!((m - p).abs() / p < 0.04, "{name}: {m:.4e} mult-adds, paper {p:.1e}");
        }
    }
}

#[test]
fn table1_rows_carry_the_counts_and_the_paper_beside_them() {
    let rows = resnet_repro::experiment::table1::table1_rows(
        &resnet_repro::experiment::table1::table1_specs(),
        |_| {},
    )
    .unwrap();
    let row = |m: &str| rows.iter().find(|r| r.model == m).unwrap_or_else(|| panic!("no row {m}"));
    assert_eq!(row("resnet18-B").params, 11_689_512);
    assert_eq!(row("resnet152-B").paper_mult_adds, Some(11.3e9));
    assert_eq!(row("resnet50-B-v1.5").paper_mult_adds, None);
    assert_eq!(row("resnet110").paper_params, Some(1.7e6));
    assert_eq!(row("plain56").params, row("resnet56").params);
    for r in &rows {
        if let Some(d) = r.mult_adds_diff_pct {
            assert!(d.abs() < 4.0, "{}: {d}% from the paper", r.model);
        }
    }
    let md = resnet_repro::experiment::table1::markdown(&rows);
    assert!(md.contains("| resnet34-C | C | - | 3x224x224 | 22,716,840 | 3.831e9 |"), "{md}");
}

/// Every family, depth and option gives [batch, classes] logits, in both modes.
#[test]
fn output_shapes_for_every_network() {
    let _guard = tch::no_grad_guard();
    let mut specs = vec![];
    for depth in [18, 34, 50, 101, 152] {
        specs.push(NetSpec::ImageNet(ImageNetNet::plain(depth)));
        for s in [S::A, S::B, S::C] {
            for placement in [BottleneckStride::FirstConv1x1, BottleneckStride::Conv3x3] {
                if depth < 50 && placement == BottleneckStride::Conv3x3 {
                    continue;
                }
                specs.push(imagenet(depth, s, placement));
            }
        }
    }
    for depth in [20, 32, 44, 56, 110, 1202] {
        specs.push(NetSpec::Cifar(CifarNet::plain(depth)));
        for s in [S::A, S::B, S::C] {
            specs.push(NetSpec::Cifar(CifarNet { shortcut: s, ..CifarNet::resnet(depth) }));
        }
    }
    // Fashion-MNIST's 1x28x28 and a non-default class count.
    specs.push(NetSpec::Cifar(CifarNet { in_channels: 1, image_size: 28, ..CifarNet::resnet(20) }));
    specs.push(NetSpec::ImageNet(ImageNetNet { num_classes: 7, ..ImageNetNet::resnet(18, S::A) }));
    for spec in specs {
        let (_vs, net) = build(&spec);
        let (c, h, w) = net.input;
        let classes = match &spec {
            NetSpec::Cifar(n) => n.num_classes,
            NetSpec::ImageNet(n) => n.num_classes,
        };
        // ImageNet nets at 112x112 keep the test quick; the pooling makes the logits' shape the same.
        let (h, w) = if h > 64 { (112, 112) } else { (h, w) };
        let x = Tensor::randn([2, c, h, w], (Kind::Float, Device::Cpu));
        for train in [false, true] {
            let y = net.forward_t(&x, train);
            assert_eq!(y.size(), [2, classes], "{} train={train}", spec.name());
            // In eval mode a fresh deep net's BN is the identity (running statistics 0 and 1), so
            // ResNet-1202's 600 additions overflow; in training mode BN keeps every layer finite.
            if train {
                assert!(y.isfinite().all().int64_value(&[]) == 1, "{}: non-finite logits", spec.name());
            }
        }
    }
}

#[test]
fn depth_counts_weighted_layers() {
    for depth in [20, 56, 1202] {
        let (_vs, net) = build(&NetSpec::Cifar(CifarNet::resnet(depth)));
        assert_eq!(net.depth(), depth);
    }
    for depth in [18, 34, 50, 101, 152] {
        let (_vs, net) = build(&NetSpec::ImageNet(ImageNetNet::plain(depth)));
        assert_eq!(net.depth(), depth);
    }
}

#[test]
fn option_a_has_no_shortcut_parameters_and_matches_plain() {
    for (plain, resnet) in [
        (NetSpec::Cifar(CifarNet::plain(56)), NetSpec::Cifar(CifarNet::resnet(56))),
        (NetSpec::ImageNet(ImageNetNet::plain(34)), imagenet(34, S::A, BottleneckStride::FirstConv1x1)),
    ] {
        let (vs_plain, _) = build(&plain);
        let (vs_res, _) = build(&resnet);
        assert_eq!(count_parameters(&vs_plain), count_parameters(&vs_res));
        let mut a: Vec<_> = vs_plain.variables().into_keys().collect();
        let mut b: Vec<_> = vs_res.variables().into_keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "option A adds no variables");
        assert!(!b.iter().any(|n| n.contains("downsample")));
    }
    // Option B adds exactly the projections where dimensions increase: two on CIFAR (16->32, 32->64),
    // three on ImageNet basic-block nets.
    let (vs_b, _) = build(&NetSpec::Cifar(CifarNet { shortcut: S::B, ..CifarNet::resnet(20) }));
    let projections = vs_b.variables().keys().filter(|n| n.ends_with("downsample.0.weight")).count();
    assert_eq!(projections, 2);
    assert_eq!(count_parameters(&vs_b), 269_722 + 2_752);
}

#[test]
fn option_a_shortcut_subsamples_and_zero_pads_new_channels() {
    let vs = nn::VarStore::new(Device::Cpu);
    let pad = ShortcutPath::new(&vs.root(), S::A, 2, 5, 2);
    let x = Tensor::arange(2 * 2 * 4 * 4, (Kind::Float, Device::Cpu)).view([2, 2, 4, 4]) + 1.0;
    let y = pad.forward_t(&x, false);
    assert_eq!(y.size(), [2, 5, 2, 2]);
    let expected = x.slice(2, 0, None, 2).slice(3, 0, None, 2);
    assert!(y.narrow(1, 0, 2).equal(&expected), "old channels are the input at every other position");
    assert_eq!(y.narrow(1, 2, 3).abs().sum(Kind::Float).double_value(&[]), 0.0, "new channels are zeros");
    assert_eq!(
        expected.get(0).get(0).get(1).get(1).double_value(&[]),
        x.get(0).get(0).get(2).get(2).double_value(&[])
    );
    assert_eq!(vs.variables().len(), 0);
}

#[test]
fn bottleneck_stride_placement() {
    for (placement, strides) in
        [(BottleneckStride::FirstConv1x1, [2, 1, 1]), (BottleneckStride::Conv3x3, [1, 2, 1])]
    {
        let (_vs, net) = build(&imagenet(50, S::B, placement));
        for stage in &net.stages[1..] {
            let got: Vec<i64> = stage[0].layers.iter().map(|l| l.conv.stride).collect();
            assert_eq!(got, strides, "{placement}");
            assert_eq!(stage[0].layers[1].conv.kernel, 3);
        }
    }
}

#[test]
fn init_is_he_normal_and_bn_is_one_zero() {
    tch::manual_seed(0);
    for spec in [NetSpec::Cifar(CifarNet::resnet(56)), imagenet(50, S::C, BottleneckStride::FirstConv1x1)] {
        let (vs, _net) = build(&spec);
        let mut convs = 0;
        for (name, t) in vs.variables() {
            let dims = t.size();
            if dims.len() == 4 {
                let fan_in = (dims[1] * dims[2] * dims[3]) as f64;
                let expected = (2.0 / fan_in).sqrt();
                let std = t.std(true).double_value(&[]);
                let mean = t.mean(Kind::Float).double_value(&[]);
                assert!((std / expected - 1.0).abs() < 0.10, "{name}: std {std}, expected {expected}");
                assert!(mean.abs() < 0.2 * expected, "{name}: mean {mean}");
                convs += 1;
            } else if name.contains("bn") || name.contains("downsample.1") {
                let want = if name.ends_with("weight") || name.ends_with("running_var") { 1.0 } else { 0.0 };
                let (lo, hi) = (t.min().double_value(&[]), t.max().double_value(&[]));
                assert!(lo == want && hi == want, "{name}: in [{lo}, {hi}], expected all {want}");
            }
        }
        assert!(convs > 20, "{}: only {convs} conv weights seen", spec.name());
    }
}

#[test]
fn fan_out_init_scales_the_same_draws_to_n_equal_k2_c_out() {
    use resnet_repro::models::HeInit;
    let fan_out = [
        NetSpec::Cifar(CifarNet { init: HeInit::FanOut, ..CifarNet::resnet(56) }),
        NetSpec::ImageNet(ImageNetNet { init: HeInit::FanOut, ..ImageNetNet::resnet(50, S::B) }),
    ];
    for spec in fan_out {
        // (The tests of this file share libtorch's generator: nothing here needs a given draw.)
        let (vs, net) = build(&spec);
        assert_eq!(net.convs().len(), vs.variables().values().filter(|t| t.dim() == 4).count());
        let mut checked = 0;
        for (name, t) in vs.variables() {
            let dims = t.size();
            // Large layers only: a 1x1 projection of 16 weights says little about its std.
            if dims.len() == 4 && t.numel() >= 2000 {
                let expected = (2.0 / (dims[0] * dims[2] * dims[3]) as f64).sqrt();
                let std = t.std(true).double_value(&[]);
                assert!((std / expected - 1.0).abs() < 0.10, "{name}: std {std}, expected {expected}");
                checked += 1;
            }
        }
        assert!(checked > 20, "{}: {checked} convs", spec.name());
    }
    // Fan-out is fan-in's draws times sqrt(c_in / c_out), conv by conv; nothing else changes.
    let (_vs, net) = build(&NetSpec::Cifar(CifarNet::resnet(20)));
    let before: Vec<Tensor> = net.convs().iter().map(|c| c.weight.copy()).collect();
    net.apply_init(HeInit::FanOut);
    for (c, w) in net.convs().iter().zip(&before) {
        let ratio = (c.in_channels as f64 / c.out_channels as f64).sqrt();
        // One multiplication per weight (~0.1): float32 rounding is ~1e-8.
        let diff = (&c.weight - w * ratio).abs().max().double_value(&[]);
        assert!(
            diff < 1e-6,
            "{}x{} conv: not the fan-in draws times {ratio}: {diff}",
            c.in_channels,
            c.out_channels
        );
    }
    assert!(net.convs().iter().any(|c| c.in_channels != c.out_channels), "some conv is rescaled");
}

#[test]
fn impossible_configurations_are_errors_naming_the_value() {
    let vs = nn::VarStore::new(Device::Cpu);
    let err = |r: anyhow::Result<ResNet>| format!("{:#}", r.unwrap_err());
    let e = err(CifarNet::resnet(21).build(&vs.root()));
    assert!(e.contains("21") && e.contains("6n+2"), "{e}");
    let e = err(CifarNet::resnet(2).build(&vs.root()));
    assert!(e.contains("depth 2 "), "{e}");
    let e = err(ImageNetNet::resnet(42, S::B).build(&vs.root()));
    assert!(e.contains("42") && e.contains("18, 34, 50, 101, 152"), "{e}");
    let e = err(CifarNet { num_classes: 0, ..CifarNet::resnet(20) }.build(&vs.root()));
    assert!(e.contains("num_classes") && e.contains('0'), "{e}");
    let e = err(ImageNetNet { num_classes: 0, ..ImageNetNet::plain(18) }.build(&vs.root()));
    assert!(e.contains("num_classes"), "{e}");
    let e = format!("{:#}", "D".parse::<Shortcut>().unwrap_err());
    assert!(e.contains("\"D\""), "{e}");
    assert_eq!(vs.variables().len(), 0, "a rejected configuration creates no variables");
}

#[test]
fn architecture_names_parse_to_the_paper_nets() {
    assert_eq!(ImageNetNet::from_arch("plain34", Shortcut::B).unwrap(), ImageNetNet::plain(34));
    assert_eq!(
        ImageNetNet::from_arch("resnet50", Shortcut::B).unwrap(),
        ImageNetNet::resnet(50, Shortcut::B)
    );
    for bad in ["vgg16", "resnet", "resnetX"] {
        assert!(ImageNetNet::from_arch(bad, Shortcut::A).is_err(), "{bad} accepted");
    }
}

#[test]
fn responses_are_every_3x3_bn_output_and_leave_logits_unchanged() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(1);
    for spec in [
        NetSpec::Cifar(CifarNet::resnet(20)),
        NetSpec::Cifar(CifarNet::plain(20)),
        imagenet(50, S::B, BottleneckStride::FirstConv1x1),
    ] {
        let (_vs, net) = build(&spec);
        let x = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
        let plain_logits = net.forward_t(&x, false);
        let (logits, responses) = forward_with_responses(&net, &x);
        // The walk is the network's forward pass: the same logits, bit for bit.
        assert!(logits.equal(&plain_logits), "{}", spec.name());
        assert_eq!(responses.len(), net.num_3x3_layers());
        match &spec {
            // 19 3x3 layers in a 20-layer CIFAR net (all but the fc).
            NetSpec::Cifar(_) => assert_eq!(responses.len(), 19),
            // One 3x3 per bottleneck: 3 + 4 + 6 + 3.
            NetSpec::ImageNet(_) => assert_eq!(responses.len(), 16),
        }
        // A response is a BN output before ReLU: it has negative entries (a ReLU output would not).
        for r in &responses {
            assert_eq!(r.size()[0], 3);
            assert!(r.min().double_value(&[]) < 0.0);
        }
    }
    // The first responses have the stem's and first stage's shape.
    let (_vs, net) = build(&NetSpec::Cifar(CifarNet::resnet(20)));
    let (_, r) = forward_with_responses(&net, &Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu)));
    assert_eq!(r[0].size(), [1, 16, 32, 32]);
    assert_eq!(r[18].size(), [1, 64, 8, 8]);
}

#[test]
fn weights_round_trip_through_safetensors_with_torchvision_names() {
    let _guard = tch::no_grad_guard();
    let dir = std::env::temp_dir().join(format!("resnet-repro-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resnet20.safetensors");
    tch::manual_seed(2);
    let spec = NetSpec::Cifar(CifarNet { shortcut: S::B, ..CifarNet::resnet(20) });
    let (vs, net) = build(&spec);
    // Make the BN statistics non-trivial so that they are checked too.
    for (name, mut t) in vs.variables() {
        if name.ends_with("running_var") {
            t.copy_(&(t.rand_like() + 0.5));
        }
    }
    vs.save(&path).unwrap();
    let names: Vec<String> = Tensor::read_safetensors(&path).unwrap().into_iter().map(|(n, _)| n).collect();
    for expected in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    tch::manual_seed(3);
    let (mut vs2, net2) = build(&spec);
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    assert!(!net2.forward_t(&x, false).equal(&net.forward_t(&x, false)));
    vs2.load(&path).unwrap();
    assert!(net2.forward_t(&x, false).equal(&net.forward_t(&x, false)));
    std::fs::remove_dir_all(&dir).unwrap();
}
