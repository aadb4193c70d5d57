//! Training: schedule and warm-up transitions, resume determinism, the metrics CSV, NaN handling,
//! the plateau rule's need of a validation set, skipped images across resumes, a run folder's
//! configuration, and a short run on real Fashion-MNIST whose loss falls.

mod common;

use resnet_repro::data::{DataConfig, DataOptions, Dataset, DatasetName, Prepared, TensorOptions};
use resnet_repro::experiment::{Preset, RunConfig, RunDir};
use resnet_repro::models::{CifarNet, NetSpec};
use resnet_repro::train::metrics::{METRICS_COLUMNS, read_metrics};
use resnet_repro::train::policy::{Plateau, PlateauState, Schedule, Warmup, WarmupState};
use resnet_repro::train::{
    Layout, Precision, RunFiles, SgdSettings, TensorFeed, TrainConfig, TrainData, TrainOptions, TrainStatus,
    Trainer, train_run,
};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[test]
fn schedule_divides_by_ten_at_the_milestones() {
    let s = Schedule { lr: 0.1, milestones: vec![32_000, 48_000], decay: 0.1, warmup: None };
    let none = PlateauState::default();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(s.lr_at(0, false, &none), 0.1));
    assert!(close(s.lr_at(31_999, false, &none), 0.1));
    assert!(close(s.lr_at(32_000, false, &none), 0.01));
    assert!(close(s.lr_at(47_999, false, &none), 0.01));
    assert!(close(s.lr_at(48_000, false, &none), 0.001));
    assert!(close(s.lr_at(63_999, false, &none), 0.001));
    // Without a warm-up configured, "warming up" changes nothing.
    assert!(close(s.lr_at(5, true, &none), 0.1));
}

#[test]
fn warm_up_holds_the_small_rate_until_the_error_falls_below_80_percent() {
    let w = Warmup { lr: 0.01, until_train_error_below: 80.0, check_every: 10, max_iterations: 2000 };
    let s = Schedule { lr: 0.1, milestones: vec![32_000, 48_000], decay: 0.1, warmup: Some(w.clone()) };
    let none = PlateauState::default();
    let mut state = WarmupState::start(Some(&w));
    assert!(state.is_active());
    assert_eq!(s.lr_at(0, state.is_active(), &none), 0.01);
    assert!(!state.update(&w, 10, 90.0));
    assert!(!state.update(&w, 20, 80.0), "80% is not below 80%");
    assert!(state.is_active());
    assert!(state.update(&w, 400, 79.9));
    assert_eq!(state, WarmupState::Done { at: 400, capped: false });
    assert_eq!(s.lr_at(400, state.is_active(), &none), 0.1, "back to 0.1");
    assert_eq!(s.lr_at(32_000, state.is_active(), &none), 0.1 * 0.1);
    assert!(!state.update(&w, 410, 95.0), "once over, it stays over");
    // The cap ends a warm-up that never reaches the threshold.
    let mut stuck = WarmupState::start(Some(&w));
    assert!(!stuck.update(&w, 1990, 95.0));
    assert!(stuck.update(&w, 2000, 95.0));
    assert_eq!(stuck, WarmupState::Done { at: 2000, capped: true });
    assert_eq!(WarmupState::start(None), WarmupState::None);
}

#[test]
fn plateau_rule_divides_the_rate_after_patience_evaluations_without_improvement() {
    let p = Plateau { patience: 2, min_improvement: 0.5, max_decays: 2 };
    let s = Schedule { lr: 0.1, milestones: vec![], decay: 0.1, warmup: None };
    let mut st = PlateauState::default();
    let decided: Vec<bool> = [50.0, 40.0, 39.8, 39.9, 30.0, 29.9, 29.8, 29.7, 29.6, 29.5, 29.4]
        .into_iter()
        .map(|e| st.update(&p, e))
        .collect();
    // 39.8 and 39.9 do not beat 40 by 0.5: the second of them divides; 30 improves; 29.9 and 29.8
    // do not: divide again; then the cap of 2 divisions holds.
    assert_eq!(decided, [false, false, false, true, false, false, true, false, false, false, false]);
    assert_eq!(st.decays, 2);
    assert!((s.lr_at(0, false, &st) - 0.001).abs() < 1e-12);
}

/// Learnable synthetic data: the label is the brightest of 10 image regions, plus noise.
fn synthetic(n: i64, seed: i64) -> Prepared {
    tch::manual_seed(seed);
    let y = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
    let x = Tensor::randn([n, 3, 16, 16], (Kind::Float, Device::Cpu)) * 0.5;
    let onehot = y.one_hot(10).to_kind(Kind::Float).view([n, 1, 10, 1]);
    let x = x + onehot.pad([0, 15, 0, 6], "constant", 0.0) * 2.0;
    Prepared {
        name: DatasetName::Cifar10,
        train_x: x.narrow(0, 0, n - 64),
        train_y: y.narrow(0, 0, n - 64),
        val: None,
        test_x: x.narrow(0, n - 64, 64),
        test_y: y.narrow(0, n - 64, 64),
        mean: Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu)),
    }
}

fn small_run(layout: Layout) -> RunConfig {
    RunConfig {
        experiment: "test".into(),
        preset: Preset::Quick,
        seed: 3,
        net: NetSpec::Cifar(CifarNet { image_size: 16, ..CifarNet::resnet(8) }),
        train: TrainConfig {
            batch_size: 32,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            iterations: 30,
            milestones: vec![15, 25],
            lr_decay: 0.1,
            warmup: Some(Warmup {
                lr: 0.01,
                until_train_error_below: 100.0,
                check_every: 5,
                max_iterations: 50,
            }),
            plateau: None,
            log_every: 5,
            eval_every: 10,
            checkpoint_every: 10,
            layout,
            precision: Precision::Fp32,
            bn_batch: None,
        },
        data: DataConfig::Cifar10(TensorOptions { eval_batch_size: 40, ..TensorOptions::default() }),
    }
}

fn tensor_options(cfg: &RunConfig) -> TensorOptions {
    cfg.data.tensors().unwrap().clone()
}

/// The files of a run in `dir`, as the store lays them out.
fn files(dir: &Path) -> RunFiles {
    RunDir { path: dir.to_path_buf() }.files()
}

/// `train_run` on CIFAR-shaped prepared data.
fn run(cfg: &RunConfig, data: &Prepared, dir: &Path, opts: &TrainOptions) -> anyhow::Result<TrainStatus> {
    let mut feed = TensorFeed::new(data, cfg.seed, cfg.train.batch_size, &tensor_options(cfg));
    train_run(cfg.job(), &mut feed, &files(dir), opts)
}

fn quiet() -> TrainOptions {
    TrainOptions { progress_bar: false, ..TrainOptions::new(Device::Cpu) }
}

fn weights(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("model.safetensors")).unwrap().into_iter().collect()
}

#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let _rng = common::rng_lock();
    let data = synthetic(320, 11);
    for layout in [Layout::ChannelsLast, Layout::Contiguous] {
        let cfg = small_run(layout);
        let whole = tempfile::tempdir().unwrap();
        let split = tempfile::tempdir().unwrap();
        let TrainStatus::Finished(a) = run(&cfg, &data, whole.path(), &quiet()).unwrap() else { panic!() };
        // Interrupted at 10 and at 20 (each call starts from scratch: new var store, optimizer, data plan).
        for expect in [10, 20] {
            let opts = TrainOptions { stop_after: Some(10), ..quiet() };
            assert_eq!(run(&cfg, &data, split.path(), &opts).unwrap(), TrainStatus::Paused(expect));
            assert!(split.path().join(format!("ckpt-{expect:08}/state.json")).is_file());
        }
        let TrainStatus::Finished(b) = run(&cfg, &data, split.path(), &quiet()).unwrap() else { panic!() };
        assert_eq!(a.last.test_error, b.last.test_error);
        assert_eq!(a.warmup_ended_at, Some(5));
        assert_eq!(b.warmup_ended_at, Some(5));
        let (wa, wb) = (weights(whole.path()), weights(split.path()));
        assert_eq!(wa.len(), wb.len());
        for (name, t) in &wa {
            assert!(t.equal(&wb[name]), "{layout:?}: {name} differs after resuming");
        }
        let strip = |rows: Vec<resnet_repro::train::metrics::MetricsRow>| -> Vec<_> {
            rows.into_iter().map(|r| (r.iteration, r.lr, r.train_loss, r.train_error, r.test_error)).collect()
        };
        let ma = strip(read_metrics(&whole.path().join("metrics.csv")).unwrap());
        let mb = strip(read_metrics(&split.path().join("metrics.csv")).unwrap());
        assert_eq!(ma, mb, "{layout:?}: the metrics of the resumed run");
        // The newest two checkpoints are kept.
        let mut ckpts: Vec<_> = std::fs::read_dir(split.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("ckpt-"))
            .collect();
        ckpts.sort();
        assert_eq!(ckpts, ["ckpt-00000020", "ckpt-00000030"]);
    }
}

#[test]
fn metrics_csv_has_the_documented_columns_and_the_schedule() {
    let _rng = common::rng_lock();
    let data = synthetic(320, 12);
    let cfg = small_run(Layout::Auto);
    let dir = tempfile::tempdir().unwrap();
    run(&cfg, &data, dir.path(), &quiet()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert_eq!(text.lines().next().unwrap(), METRICS_COLUMNS.join(","));
    let rows = read_metrics(&dir.path().join("metrics.csv")).unwrap();
    assert_eq!(rows.iter().map(|r| r.iteration).collect::<Vec<_>>(), [5, 10, 15, 20, 25, 30]);
    // Warm-up rate for the first 5 updates, then 0.1, / 10 at 15 and 25 (the rate of each row's last update).
    let lrs: Vec<f64> = rows.iter().map(|r| r.lr).collect();
    for (got, want) in lrs.iter().zip([0.01, 0.1, 0.1, 0.01, 0.01, 0.001]) {
        assert!((got - want).abs() < 1e-12, "{lrs:?}");
    }
    let tested: Vec<bool> = rows.iter().map(|r| r.test_error.is_some()).collect();
    assert_eq!(tested, [false, true, false, true, false, true]);
    assert!(rows.iter().all(|r| r.val_error.is_none()));
    assert!((rows[1].epoch - 10.0 * 32.0 / 256.0).abs() < 1e-9);
    assert!(rows.iter().all(|r| (0.0..=100.0).contains(&r.train_error) && r.train_loss > 0.0));
    assert!(rows.windows(2).all(|w| w[0].seconds <= w[1].seconds));
}

#[test]
fn a_run_folder_keeps_its_configuration_and_refuses_another() {
    let cfg = small_run(Layout::Auto);
    let dir = tempfile::tempdir().unwrap();
    let run_dir = RunDir { path: dir.path().join("cifar10-quick/resnet8/seed3") };
    run_dir.claim(&cfg).unwrap();
    assert_eq!(run_dir.config().unwrap(), cfg, "config.toml holds the resolved configuration");
    run_dir.claim(&cfg).unwrap();
    let mut other = cfg.clone();
    other.train.lr = 0.2;
    other.train.bn_batch = Some(4);
    let e = format!("{:#}", run_dir.claim(&other).unwrap_err());
    // Exactly the two lines that differ, the changed value paired with the old, each with its table.
    let said = e.split_once("configuration than this one (").unwrap().1.split_once(");").unwrap().0;
    assert_eq!(said, "`train.lr = 0.1` there, `train.lr = 0.2` here; `train.bn_batch = 4` here only", "{e}");
}

#[test]
fn a_diverging_run_stops_with_a_clear_message_and_keeps_its_last_good_checkpoint() {
    let _rng = common::rng_lock();
    let data = synthetic(320, 14);
    let mut cfg = small_run(Layout::Auto);
    cfg.train.warmup = None;
    cfg.train.iterations = 40;
    cfg.train.milestones = vec![];
    let dir = tempfile::tempdir().unwrap();
    // Ten sane iterations and a checkpoint, then an absurd rate.
    let opts = TrainOptions { stop_after: Some(10), ..quiet() };
    run(&cfg, &data, dir.path(), &opts).unwrap();
    let mut bad = cfg.clone();
    bad.train.milestones = vec![10];
    bad.train.lr_decay = 1e30;
    // Resume the same folder with an absurd rate after iteration 10.
    let e = format!("{:#}", run(&bad, &data, dir.path(), &quiet()).unwrap_err());
    assert!(e.contains("training loss became") && e.contains("ckpt-00000010"), "{e}");
    assert!(dir.path().join("ckpt-00000010/model.safetensors").is_file());
    assert!(!dir.path().join("final.json").exists());
    let good = weights(&dir.path().join("ckpt-00000010"));
    assert!(good.values().all(|t| t.isfinite().all().int64_value(&[]) == 1));
}

/// Tensor data that misbehaves as real runs can: `poison` makes its evaluations leave a BN
/// statistic non-finite (as a window's last update can leave the weights while every loss of the
/// window was finite); `skipping` reports one undecodable image per 10 updates it serves (as a
/// loader does), keeping those it was started with.
struct Meddling<'a> {
    inner: TensorFeed<'a>,
    poison: bool,
    skipping: bool,
    skipped: Vec<usize>,
}

impl<'a> Meddling<'a> {
    fn new(data: &'a Prepared, cfg: &RunConfig, poison: bool, skipping: bool) -> Self {
        let inner = TensorFeed::new(data, cfg.seed, cfg.train.batch_size, &tensor_options(cfg));
        Meddling { inner, poison, skipping, skipped: vec![] }
    }
}

impl TrainData for Meddling<'_> {
    fn train_len(&self) -> usize {
        self.inner.train_len()
    }
    fn has_validation(&self) -> bool {
        false
    }
    fn start(&mut self, iteration: u64, skipped: &[usize]) -> anyhow::Result<()> {
        self.skipped = skipped.to_vec();
        self.inner.start(iteration, skipped)
    }
    fn batch(&mut self, iteration: u64) -> anyhow::Result<(Tensor, Tensor)> {
        if self.skipping && iteration % 10 == 9 {
            self.skipped.push(iteration as usize);
        }
        self.inner.batch(iteration)
    }
    fn evaluate(
        &mut self,
        net: &resnet_repro::models::ResNet,
        f: resnet_repro::shim::MemoryFormat,
    ) -> anyhow::Result<resnet_repro::train::Evaluation> {
        let e = self.inner.evaluate(net, f)?;
        if self.poison {
            let _ = net.stem_conv_bn().bn.running_var.shallow_clone().fill_(f64::NAN);
        }
        Ok(e)
    }
    fn skipped(&mut self) -> anyhow::Result<Vec<usize>> {
        Ok(self.skipped.clone())
    }
}

#[test]
fn non_finite_weights_are_never_checkpointed() {
    let _rng = common::rng_lock();
    let data = synthetic(320, 15);
    let mut cfg = small_run(Layout::Auto);
    (cfg.train.warmup, cfg.train.iterations, cfg.train.milestones) = (None, 40, vec![]);
    (cfg.train.log_every, cfg.train.eval_every, cfg.train.checkpoint_every) = (5, 5, 5);
    let dir = tempfile::tempdir().unwrap();
    let feed = |poison| Meddling::new(&data, &cfg, poison, false);
    let pause = TrainOptions { stop_after: Some(10), ..quiet() };
    train_run(cfg.job(), &mut feed(false), &files(dir.path()), &pause).unwrap();
    // Iteration 15's row: its losses are finite, the weights are not.
    let e = format!("{:#}", train_run(cfg.job(), &mut feed(true), &files(dir.path()), &quiet()).unwrap_err());
    assert!(e.contains("weights became non-finite by iteration 15") && e.contains("ckpt-00000010"), "{e}");
    assert!(!dir.path().join("ckpt-00000015").exists(), "no checkpoint of non-finite weights");
    assert!(dir.path().join("ckpt-00000010/model.safetensors").is_file());
    assert!(!dir.path().join("model.safetensors").exists());
}

#[test]
fn a_plateau_rule_without_a_validation_set_is_refused() {
    let _rng = common::rng_lock();
    let data = synthetic(320, 16);
    let mut cfg = small_run(Layout::Auto);
    cfg.train.plateau = Some(Plateau::default());
    let dir = tempfile::tempdir().unwrap();
    // Only a test set: it must not select the rate.
    let e = format!("{:#}", run(&cfg, &data, dir.path(), &quiet()).unwrap_err());
    assert!(e.contains("plateau needs a validation set"), "{e}");
    assert!(!dir.path().join("metrics.csv").exists(), "refused before training");
    // With a validation split it trains, and the rule reads the validation error.
    let mut with_val = synthetic(320, 16);
    with_val.val = Some((with_val.test_x.shallow_clone(), with_val.test_y.shallow_clone()));
    let TrainStatus::Finished(s) = run(&cfg, &with_val, dir.path(), &quiet()).unwrap() else { panic!() };
    assert!(s.last.val_error.is_some());
}

#[test]
fn skipped_images_are_carried_across_a_resume() {
    let _rng = common::rng_lock();
    let data = synthetic(320, 17);
    let cfg = small_run(Layout::Auto);
    let dir = tempfile::tempdir().unwrap();
    let feed = || Meddling::new(&data, &cfg, false, true);
    let pause = TrainOptions { stop_after: Some(20), ..quiet() };
    train_run(cfg.job(), &mut feed(), &files(dir.path()), &pause).unwrap();
    let TrainStatus::Finished(s) = train_run(cfg.job(), &mut feed(), &files(dir.path()), &quiet()).unwrap()
    else {
        panic!()
    };
    assert_eq!(s.skipped_images, 3, "updates 10, 20 (before the pause) and 30 (after it)");
    let rows = read_metrics(&dir.path().join("metrics.csv")).unwrap();
    let counts: Vec<u64> = rows.iter().map(|r| r.skipped_images).collect();
    assert_eq!(counts, [0, 1, 1, 2, 2, 3], "rows at 5, 10, .., 30");
}

/// Real data: Fashion-MNIST from the data folder, Debian's package (`.ci/run` installs it) or
/// the canonical address.
#[test]
fn a_short_run_on_real_fashion_mnist_lowers_the_loss() {
    let _rng = common::rng_lock();
    let cache = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/resnet-repro/data")).unwrap();
    let fm = DataConfig::downloadable(DatasetName::FashionMnist).unwrap();
    let ds = Dataset::load(&fm, &DataOptions::new(cache)).unwrap_or_else(|e| {
        panic!(
            "this test needs the real Fashion-MNIST: Debian's dataset-fashion-mnist package (`.ci/run` \
             installs it) or a network to download it from ({e:#})"
        )
    });
    assert_eq!((ds.train.len(), ds.test.len()), (60_000, 10_000));
    let data = Prepared::new(&ds, 0, Device::Cpu).unwrap();
    let mut cfg = small_run(Layout::Auto);
    cfg.seed = 0;
    cfg.net = NetSpec::Cifar(CifarNet { in_channels: 1, image_size: 28, ..CifarNet::resnet(8) });
    cfg.data =
        DataConfig::FashionMnist(TensorOptions { test_subset: Some(2000), ..TensorOptions::default() });
    let t = &mut cfg.train;
    (t.batch_size, t.iterations, t.milestones, t.warmup) = (64, 80, vec![], None);
    (t.log_every, t.eval_every, t.checkpoint_every) = (10, 80, 80);
    let dir = tempfile::tempdir().unwrap();
    let TrainStatus::Finished(f) = run(&cfg, &data, dir.path(), &quiet()).unwrap() else { panic!() };
    let rows = read_metrics(&dir.path().join("metrics.csv")).unwrap();
    let (first, last) = (rows[0].train_loss, rows.last().unwrap().train_loss);
    assert!(first > 1.5, "starts near chance: {first}");
    assert!(last < 0.7 * first, "the loss fell from {first} to {last}");
    let err = f.last.test_error.unwrap();
    assert!(err < 75.0, "test error {err} after 80 iterations (chance: 90)");
    assert_eq!(f.last.images, 2000);
}

#[test]
fn bn_batch_on_one_device_trains_as_replicas_of_that_batch_would() {
    // One trainer with bn_batch 4 on a batch of 12 against three replicas (same start) each
    // stepping on its 4 images with the gradients averaged by hand: the same weights, momentum
    // and running statistics (the mean of the replicas') after three steps.
    let _rng = common::rng_lock();
    let net = NetSpec::Cifar(CifarNet { image_size: 12, ..CifarNet::resnet(8) });
    let format = resnet_repro::shim::MemoryFormat::ChannelsLast;
    let make = || Trainer::with_format(&net, SgdSettings::PAPER, 5, Device::Cpu, format).unwrap();
    // The effect guarded: one step with BN over the whole batch of 12 instead of groups of 4.
    let effect = {
        let (mut whole, mut one) = (make(), make());
        one.bn_batch = Some(4);
        tch::manual_seed(50);
        let x = Tensor::randn([12, 3, 12, 12], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [12], (Kind::Int64, Device::Cpu));
        let _ = whole.step(&x, &y, 0.1).unwrap();
        let _ = one.step(&x, &y, 0.1).unwrap();
        common::relative_difference(&whole.vs.variables(), &one.vs.variables())
    };
    let mut grouped = make();
    grouped.bn_batch = Some(4);
    let mut replicas: Vec<Trainer> = (0..3).map(|_| make()).collect();
    for step in 0..3 {
        tch::manual_seed(50 + step);
        let x = Tensor::randn([12, 3, 12, 12], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [12], (Kind::Int64, Device::Cpu));
        let (loss, wrong) = grouped.step(&x, &y, 0.1).unwrap();
        let (mut losses, mut wrongs) = (0.0, 0);
        for (k, r) in replicas.iter_mut().enumerate() {
            let (xk, yk) = (x.narrow(0, 4 * k as i64, 4), y.narrow(0, 4 * k as i64, 4));
            let logits = tch::nn::ModuleT::forward_t(&r.net, &xk, true);
            let l = logits.cross_entropy_for_logits(&yk);
            r.opt.zero_grad().unwrap();
            l.backward();
            losses += l.double_value(&[]) / 3.0;
            wrongs += logits.argmax(1, false).ne_tensor(&yk).sum(Kind::Int64).int64_value(&[]);
        }
        let n = replicas[0].opt.params.len();
        for i in 0..n {
            let mean = replicas
                .iter()
                .map(|r| r.opt.params[i].grad())
                .fold(None::<Tensor>, |a, g| Some(a.map_or(g.copy(), |a| a + g)));
            let mean = mean.unwrap() / 3.0;
            for r in &replicas {
                r.opt.params[i].grad().copy_(&mean);
            }
        }
        let stats: Vec<Vec<Tensor>> =
            replicas.iter().map(|r| resnet_repro::models::running_stats(&r.vs)).collect();
        for j in 0..stats[0].len() {
            let mean = (&stats[0][j] + &stats[1][j] + &stats[2][j]) / 3.0;
            for s in &stats {
                tch::no_grad(|| s[j].shallow_clone().copy_(&mean));
            }
        }
        replicas.iter_mut().for_each(|r| r.opt.step(0.1).unwrap());
        // A loss of about 2.3: 1e-5 is 4e-6 of it, above float32 rounding in another order.
        assert!((loss.double_value(&[]) - losses).abs() < 1e-5, "step {step}: loss");
        assert_eq!(wrong.int64_value(&[]), wrongs, "step {step}: misclassified");
        let diff = common::relative_difference(&grouped.vs.variables(), &replicas[0].vs.variables());
        common::assert_far_below(diff, effect, &format!("step {step}: bn_batch 4 and 3 replicas of 4"));
    }
}

#[test]
fn bf16_autocast_runs_convolutions_in_bf16_and_keeps_weights_statistics_and_gradients_fp32() {
    let _rng = common::rng_lock();
    let net = NetSpec::Cifar(CifarNet { image_size: 16, ..CifarNet::resnet(8) });
    let x = Tensor::randn([16, 3, 16, 16], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
    let format = resnet_repro::shim::MemoryFormat::ChannelsLast;
    let mut fp32 = Trainer::with_format(&net, SgdSettings::PAPER, 0, Device::Cpu, format).unwrap();
    let mut bf16 = Trainer::with_format(&net, SgdSettings::PAPER, 0, Device::Cpu, format).unwrap();
    bf16.precision = Precision::Bf16;
    // Inside the guard a convolution computes in bf16; after it, in fp32 again.
    let conv = &bf16.net.stem_conv_bn().conv;
    {
        let _ac = resnet_repro::shim::Autocast::bf16(Device::Cpu).unwrap();
        assert_eq!(conv.forward(&x).kind(), Kind::BFloat16);
    }
    assert_eq!(conv.forward(&x).kind(), Kind::Float);
    let (l32, _) = fp32.step(&x, &y, 0.1).unwrap();
    let (l16, _) = bf16.step(&x, &y, 0.1).unwrap();
    let (l32, l16) = (l32.double_value(&[]), l16.double_value(&[]));
    assert!((l32 - l16).abs() < 0.02 * l32, "fp32 loss {l32}, bf16 loss {l16}");
    for (name, t) in bf16.vs.variables() {
        assert_eq!(t.kind(), Kind::Float, "{name} is no longer fp32");
    }
    assert!(bf16.opt.params.iter().all(|p| p.grad().kind() == Kind::Float));
    // Not the same arithmetic: the weights after one step differ, but each tensor by well under
    // what the step moved it (0.22 of it at most on an AMD EPYC with AVX512-BF16). A weight stored
    // or updated in bf16 would be off by its own rounding, ~4e-3 of a BN gamma of 1: several
    // times that gamma's update of ~1e-3.
    let (a, b) = (fp32.vs.variables(), bf16.vs.variables());
    let start =
        Trainer::with_format(&net, SgdSettings::PAPER, 0, Device::Cpu, format).unwrap().vs.variables();
    let largest = |x: &Tensor, y: &Tensor| (x - y).abs().max().double_value(&[]);
    let (name, share) = a
        .iter()
        .map(|(n, t)| (n, largest(&b[n], t) / largest(t, &start[n])))
        .fold((None, 0.0f64), |acc, (n, r)| if r > acc.1 { (Some(n), r) } else { acc });
    println!("bf16 moves a tensor's one-step update by {share:.2} of it at most ({name:?})");
    assert!(share > 0.0 && share < 0.5, "{name:?}: bf16 changed the step by {share} of it");
}

/// `t` rounded to bfloat16, in float64.
fn bf16_f64(t: &Tensor) -> Tensor {
    t.to_kind(Kind::BFloat16).to_kind(Kind::Double)
}

/// The largest difference of `a` from `b`, in bfloat16 steps (2^-8) of b's largest magnitude.
fn bf16_steps(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]) * 2f64.powi(-8);
    (a.to_kind(Kind::Double) - b).abs().max().double_value(&[]) / scale
}

#[test]
fn bf16_convolutions_in_fp32_kernels_compute_bf16_autocasts_arithmetic() {
    let _rng = common::rng_lock();
    tch::manual_seed(3);
    let x = Tensor::randn([4, 16, 12, 12], (Kind::Float, Device::Cpu));
    let x = resnet_repro::shim::contiguous(&x, resnet_repro::shim::MemoryFormat::ChannelsLast).unwrap();
    let x = x.set_requires_grad(true);
    let w = (Tensor::randn([32, 16, 3, 3], (Kind::Float, Device::Cpu)) * 0.1).set_requires_grad(true);
    let g = Tensor::randn([4, 32, 6, 6], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
    let y = resnet_repro::shim::conv2d_bf16_in_fp32(&x, &w, 2, 1).unwrap();
    assert_eq!((y.kind(), y.size()), (Kind::BFloat16, vec![4, 32, 6, 6]));
    assert!(resnet_repro::shim::is_contiguous(&y, resnet_repro::shim::MemoryFormat::ChannelsLast));
    (y.to_kind(Kind::Float) * g.to_kind(Kind::Float)).sum(Kind::Float).backward(); // dL/dy = g
    let (dx, dw) = (x.grad(), w.grad());
    assert_eq!((dx.kind(), dw.kind()), (Kind::Float, Kind::Float), "gradients reach fp32 leaves in fp32");
    // float64 on the bfloat16-rounded operands, each result rounded to bfloat16 once: what a
    // bfloat16 convolution accumulating in fp32 computes, but for its rounding (one step at most).
    let (x64, w64) =
        (bf16_f64(&x.detach()).set_requires_grad(true), bf16_f64(&w.detach()).set_requires_grad(true));
    let y64 = x64.conv2d(&w64, None::<Tensor>, [2, 2], [1, 1], [1, 1], 1);
    (&y64 * g.to_kind(Kind::Double)).sum(Kind::Double).backward();
    for (ours, exact, what) in
        [(&y, &y64, "output"), (&dx, &x64.grad(), "input gradient"), (&dw, &w64.grad(), "weight gradient")]
    {
        let steps = bf16_steps(ours, &bf16_f64(exact));
        assert!(steps <= 1.0, "{what}: {steps:.2} bfloat16 steps from the exact result rounded");
        assert!(ours.to_kind(Kind::Double).equal(&bf16_f64(ours)), "{what} is not bfloat16-valued");
    }
    // libtorch's own bfloat16 autocast: the same output within 2 steps (oneDNN's kernels sum in
    // another order; an AVX2 CPU's fallback kernel measured 1.6 steps on gradients, 0.05 here).
    let native = tch::no_grad(|| {
        let _ac = resnet_repro::shim::Autocast::bf16(Device::Cpu).unwrap();
        x.conv2d(&w, None::<Tensor>, [2, 2], [1, 1], [1, 1], 1)
    });
    assert_eq!(native.kind(), Kind::BFloat16);
    let steps = bf16_steps(&y, &native.to_kind(Kind::Double));
    assert!(steps <= 2.0, "{steps:.2} bfloat16 steps from libtorch's bfloat16 autocast");
    // Only under bfloat16 autocast is a CPU convolution routed there.
    assert!(!resnet_repro::shim::cpu_bf16_in_fp32(), "without autocast");
}
