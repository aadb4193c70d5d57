//! Figure 7 from Table 6's runs: which runs it uses (the first seed of each of its networks in an
//! experiment), and the measurement of their layer responses on the test set. Training what is
//! missing is the runner's job; the `cifar_layer_responses` binary composes the two.

use super::config::Experiment;
use super::runner::RunnerOptions;
use crate::data::{Dataset, Prepared, TensorOptions};
use crate::eval::responses::{FIG7_NETS, ResponseRow, fig7_position, layer_stds};
use crate::models::NetSpec;
use anyhow::{Result, bail, ensure};

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
    let device = o.train.device;
    let ds = Dataset::load(&fig7.data, &o.data)?;
    let data = Prepared::new(&ds, *val_split, device)?;
    let images = data.test_y.size()[0] as usize;
    let mut rows = Vec::new();
    for run in fig7.resolve(ds.shape())? {
        let dir = o.store.run(&run);
        ensure!(dir.is_finished(), "{}: the run has not finished", dir.path.display());
        let loaded = dir.load_net(&run, device)?;
        let stds = layer_stds(&loaded.net, &data.test_x, batch, loaded.format)?;
        eprintln!(
            "{}: {} layers, response std {:.3} (first) .. {:.3} (last) over {images} test images",
            run.label(),
            stds.len(),
            stds[0],
            stds[stds.len() - 1]
        );
        let NetSpec::Cifar(net) = &run.net else { bail!("Figure 7 is of the CIFAR networks") };
        rows.extend(stds.iter().enumerate().map(|(i, &std)| ResponseRow {
            group: run.group().to_string(),
            net: run.net.name(),
            depth: net.depth,
            residual: net.residual,
            seed: run.seed,
            layer: i + 1,
            std,
            images,
        }));
    }
    Ok(rows)
}
