//! Figure 7 from Table 6's runs: which runs it uses (the first seed of each of its networks in an
//! experiment), and the measurement of their layer responses on the test set. Training what is
//! missing is the runner's job; the `cifar_layer_responses` binary composes the two.

use super::config::{Experiment, RunConfig};
use super::runner::RunnerOptions;
use super::store::{RunDir, Store};
use crate::data::{DataConfig, DataOptions, Dataset, Prepared, TensorOptions};
use crate::eval::responses::{FIG7_NETS, ResponseRow, fig7_position, layer_stds};
use crate::models::NetSpec;
use anyhow::{Result, bail, ensure};
use tch::Device;

/// The experiment cut down to Figure 7's networks, each with its first seed only.
pub fn fig7_experiment(exp: &Experiment) -> Result<Experiment> {
    let mut sub = exp.clone();
    sub.runs.retain(|r| fig7_position(r.residual, r.depth).is_some());
    ensure!(
        !sub.runs.is_empty(),
        "experiment {} has none of Figure 7's networks (plain-20/56, ResNet-20/56/110)",
        exp.name
    );
    for r in &mut sub.runs {
        let first = r.seeds.as_ref().unwrap_or(&exp.seeds)[0];
        r.seeds = Some(vec![first]);
    }
    sub.runs.sort_by_key(|r| fig7_position(r.residual, r.depth));
    let absent: Vec<String> = FIG7_NETS
        .iter()
        .filter(|(res, d)| !sub.runs.iter().any(|r| (r.residual, r.depth) == (*res, *d)))
        .map(|(res, d)| format!("{}-{d}", if *res { "ResNet" } else { "plain" }))
        .collect();
    if !absent.is_empty() {
        eprintln!("Figure 7: {} not in experiment {}, left out", absent.join(", "), exp.name);
    }
    Ok(sub)
}

/// The std of every 3x3 layer's response of each (finished) run of `fig7` over the test set,
/// `batch` images per forward pass.
pub fn measure_responses(fig7: &Experiment, o: &RunnerOptions, batch: usize) -> Result<Vec<ResponseRow>> {
    let Some(TensorOptions { val_split, .. }) = fig7.data.tensors() else {
        bail!("Figure 7 is of the CIFAR networks")
    };
    let ds = Dataset::load(&fig7.data, &o.data)?;
    let data = Prepared::new(&ds, *val_split, o.train.device)?;
    let mut rows = Vec::new();
    for run in fig7.resolve(ds.shape())? {
        let dir = o.store.run(&run);
        ensure!(dir.is_finished(), "{}: the run has not finished", dir.path.display());
        rows.extend(measure_run(&run, &dir, &data, batch, o.train.device)?);
    }
    Ok(rows)
}

/// The responses of a store's finished Figure 7 networks (the first finished seed of each, as
/// the figure uses) that `have` lacks, measured on their data's test set: Figure 7 from released
/// networks, no training.
pub fn measure_store(
    store: &Store,
    have: &[ResponseRow],
    data: &DataOptions,
    device: Device,
    batch: usize,
) -> Result<Vec<ResponseRow>> {
    let mut rows: Vec<ResponseRow> = Vec::new();
    let mut loaded: Option<(DataConfig, Prepared)> = None;
    for run in store.runs()?.iter().filter(|r| r.dir.is_finished() && r.config.net.named_option().is_none()) {
        let c = &run.config;
        let (group, net) = (c.group().to_string(), c.net.name());
        let fig7_net = fig7_position(c.net.residual(), c.net.depth()).is_some();
        let measured = |rows: &[ResponseRow]| rows.iter().any(|r| r.group == group && r.net == net);
        if !fig7_net || measured(have) || measured(&rows) {
            continue; // not in the figure, or its first seed is measured
        }
        let Some(TensorOptions { val_split, .. }) = c.data.tensors() else { continue };
        if loaded.as_ref().is_none_or(|(d, _)| *d != c.data) {
            let ds = Dataset::load(&c.data, data)?;
            loaded = Some((c.data.clone(), Prepared::new(&ds, *val_split, device)?));
        }
        let (_, prepared) = loaded.as_ref().expect("loaded above");
        rows.extend(measure_run(c, &run.dir, prepared, batch, device)?);
    }
    Ok(rows)
}

/// One finished run's layer response stds over `data`'s test set, as rows.
fn measure_run(
    run: &RunConfig,
    dir: &RunDir,
    data: &Prepared,
    batch: usize,
    device: Device,
) -> Result<Vec<ResponseRow>> {
    let NetSpec::Cifar(net) = &run.net else { bail!("Figure 7 is of the CIFAR networks") };
    let images = data.test_y.size()[0] as usize;
    let loaded = dir.load_net(run, device)?;
    let stds = layer_stds(&loaded.net, &data.test_x, batch, loaded.format)?;
    eprintln!(
        "{}: {} layers, response std {:.3} (first) .. {:.3} (last) over {images} test images",
        run.label(),
        stds.len(),
        stds[0],
        stds[stds.len() - 1]
    );
    Ok(stds
        .iter()
        .enumerate()
        .map(|(i, &std)| ResponseRow {
            group: run.group().to_string(),
            net: run.net.name(),
            depth: net.depth,
            residual: net.residual,
            seed: run.seed,
            layer: i + 1,
            std,
            images,
        })
        .collect())
}
