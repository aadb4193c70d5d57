//! Figure 7: layer-response statistics, the CSV and the figure.

mod common;

use resnet_repro::eval::responses::{
    ResponseRow, forward_with_responses, layer_stds, merge_responses, read_responses,
};
use resnet_repro::models::CifarNet;
use resnet_repro::shim::MemoryFormat;
use tch::{Device, Kind, Tensor, nn};

/// With every conv at zero and every BN's gamma at zero, a 3x3 layer's response is its BN's beta,
/// a constant per channel; with beta_c = l * c in the l-th layer, the standard deviation over all
/// values is l times that of 0..C-1, sqrt((C^2 - 1) / 12), whatever the input.
#[test]
fn stds_of_hand_set_layers_are_the_expected_values() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = CifarNet::resnet(8).build(&vs.root()).unwrap();
    let bns = [
        "bn1",
        "layer1.0.bn1",
        "layer1.0.bn2",
        "layer2.0.bn1",
        "layer2.0.bn2",
        "layer3.0.bn1",
        "layer3.0.bn2",
    ];
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, var) in &vars {
            if name.ends_with(".weight") && var.dim() == 4 {
                let _ = var.shallow_clone().zero_();
            }
        }
        for (l, bn) in bns.iter().enumerate() {
            let mut gamma = vars[&format!("{bn}.weight")].shallow_clone();
            let mut beta = vars[&format!("{bn}.bias")].shallow_clone();
            let c = beta.size()[0];
            let _ = gamma.zero_();
            beta.copy_(&(Tensor::arange(c, (Kind::Float, Device::Cpu)) * (l + 1) as f64));
        }
    });
    let x = Tensor::randn([10, 3, 32, 32], (Kind::Float, Device::Cpu));
    // Batches of 3: the statistics must be of the whole set, not an average of batches.
    let stds = layer_stds(&net, &x, 3, MemoryFormat::Contiguous).unwrap();
    let channels = [16.0, 16.0, 16.0, 32.0, 32.0, 64.0, 64.0];
    assert_eq!(stds.len(), 7);
    for (l, (&got, c)) in stds.iter().zip(channels).enumerate() {
        let want = (l + 1) as f64 * ((c * c - 1.0) / 12.0f64).sqrt();
        assert!((got - want).abs() < 1e-6 * want, "layer {}: std {got}, expected {want}", l + 1);
    }
}

#[test]
fn stds_over_batches_equal_the_std_of_all_responses_at_once() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = CifarNet::plain(20).build(&vs.root()).unwrap();
    let x = Tensor::randn([7, 3, 32, 32], (Kind::Float, Device::Cpu));
    // Batches of 2 in channels_last against one NCHW pass: equal up to float32 rounding.
    let stds = layer_stds(&net, &x, 2, MemoryFormat::ChannelsLast).unwrap();
    let (_, responses) = tch::no_grad(|| forward_with_responses(&net, &x));
    assert_eq!(stds.len(), 19);
    // The effect guarded: the mean of the batches' own stds, which is not the std of the whole.
    let batches = [(0, 2), (2, 2), (4, 2), (6, 1)];
    for (l, (got, r)) in stds.iter().zip(&responses).enumerate() {
        let r = r.to_kind(Kind::Double);
        let want = r.std(false).double_value(&[]);
        let per_batch =
            batches.iter().map(|&(s, n)| r.narrow(0, s, n).std(false).double_value(&[])).sum::<f64>() / 4.0;
        let what = format!("layer {}", l + 1);
        common::assert_far_below((got - want).abs() / want, (per_batch - want).abs() / want, &what);
        assert!(*got > 0.1, "layer {}: a degenerate std {got}", l + 1);
    }
}

fn rows(group: &str, net: &str, stds: &[f64]) -> Vec<ResponseRow> {
    stds.iter()
        .enumerate()
        .map(|(i, &std)| ResponseRow {
            group: group.into(),
            net: net.into(),
            depth: net.trim_start_matches(char::is_alphabetic).parse().unwrap(),
            residual: net.starts_with("resnet"),
            seed: 0,
            layer: i + 1,
            std,
            images: 100,
        })
        .collect()
}

#[test]
fn responses_csv_keeps_other_groups_and_the_figure_is_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("responses.csv");
    let cifar = [rows("cifar10", "plain20", &[1.0, 2.0, 0.5]), rows("cifar10", "resnet20", &[0.7, 0.6, 0.4])]
        .concat();
    merge_responses(&path, &cifar).unwrap();
    let fashion = rows("fashion-mnist-quick", "resnet56", &[1.5, 1.0]);
    merge_responses(&path, &fashion).unwrap();
    // Rewriting a group replaces only its rows.
    let fashion2 = rows("fashion-mnist-quick", "resnet56", &[1.25, 1.0]);
    let all = merge_responses(&path, &fashion2).unwrap();
    assert_eq!(read_responses(&path).unwrap(), all);
    assert_eq!(all.len(), 8);
    assert_eq!(
        all.iter().filter(|r| r.group == "fashion-mnist-quick").map(|r| r.std).collect::<Vec<_>>(),
        [1.25, 1.0]
    );
    let header = std::fs::read_to_string(&path).unwrap().lines().next().unwrap().to_string();
    assert_eq!(header, "group,net,depth,residual,seed,layer,std,images");

    let written = resnet_repro::report::render_fig7(&path, &dir.path().join("plots")).unwrap();
    let names: Vec<_> =
        written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["fig7_cifar10.png", "fig7_fashion-mnist-quick.png"]);
    let img = image::open(&written[0]).unwrap().to_rgb8();
    // plain-20 and ResNet-20 share depth 20's orange; count its pixels.
    let orange = img.pixels().filter(|p| p.0[0] > 200 && (140..180).contains(&p.0[1]) && p.0[2] < 40).count();
    assert!(orange > 300, "only {orange} pixels of the curves' colour");
}

#[test]
fn missing_table6_runs_are_trained_then_measured_on_the_test_set() {
    use resnet_repro::experiment::figure7::{fig7_experiment, measure_responses};
    use resnet_repro::experiment::{Experiment, run_experiment};
    let dir = tempfile::tempdir().unwrap();
    let exp: Experiment = toml::from_str(
        r#"
        name = "fig7-test"
        preset = "quick"
        seeds = [3, 4]
        [data]
        dataset = "fashion-mnist"
        [train]
        batch_size = 16
        lr = 0.1
        iterations = 2
        milestones = [1]
        log_every = 1
        eval_every = 2
        checkpoint_every = 2
        [[runs]]
        depth = 20
        residual = false
        [[runs]]
        depth = 20
        residual = true
        [[runs]]
        depth = 32
        residual = true
        "#,
    )
    .unwrap();
    let opts = common::fixture_runner(dir.path(), &dir.path().join("table6"));
    let fig7 = fig7_experiment(&exp).unwrap();
    let measure = || {
        run_experiment(&fig7, &opts).unwrap();
        measure_responses(&fig7, &opts, 10).unwrap()
    };
    let rows = measure();
    // Only Figure 7's networks, only their first seed, trained as Table 6 runs.
    let group = dir.path().join("table6/fashion-mnist-quick");
    assert_eq!(common::files_in(&group).iter().filter(|f| f.ends_with("final.json")).count(), 2);
    assert!(
        group.join("plain20/seed3/final.json").is_file() && group.join("resnet20/seed3/final.json").is_file()
    );
    assert_eq!(rows.len(), 2 * 19);
    assert!(rows.iter().all(|r| r.images == 24 && r.seed == 3 && r.std.is_finite() && r.std > 0.0));
    assert_eq!(rows.iter().filter(|r| r.group == "fashion-mnist-quick").count(), rows.len());
    // A second call trains nothing and measures the same numbers.
    let before =
        std::fs::metadata(group.join("plain20/seed3/model.safetensors")).unwrap().modified().unwrap();
    assert_eq!(measure(), rows);
    let after = std::fs::metadata(group.join("plain20/seed3/model.safetensors")).unwrap().modified().unwrap();
    assert_eq!(before, after);
}
