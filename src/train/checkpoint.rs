//! Checkpoints: the weights (BN statistics included), the optimizer's momentum buffers and the
//! training state, in `ckpt-<iteration>/` folders that appear only when complete (written as
//! `.tmp` and renamed); older ones are removed once a newer one is in place.

use super::optim::Sgd;
use super::policy::PolicyState;
use crate::fsutil::write_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::nn;

/// Everything besides weights and momentum that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Updates done.
    pub iteration: u64,
    /// The warm-up's and the plateau rule's state.
    #[serde(flatten)]
    pub policy: PolicyState,
    /// Training wall time so far.
    pub seconds: f64,
    /// The run's seed. Data order, crops and flips are drawn from (seed, epoch), so the seed and the
    /// iteration are the whole random state.
    pub seed: u64,
    /// Indices of the undecodable training images skipped so far (image folders with
    /// `--skip-corrupt`), so that a resumed run counts each file once.
    #[serde(default)]
    pub skipped: Vec<usize>,
}

const PREFIX: &str = "ckpt-";

fn ckpt_dir(run_dir: &Path, iteration: u64) -> PathBuf {
    run_dir.join(format!("{PREFIX}{iteration:08}"))
}

/// Complete checkpoints in a run folder, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    if !run_dir.is_dir() {
        return Ok(found);
    }
    for entry in std::fs::read_dir(run_dir).with_context(|| format!("listing {}", run_dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if let Some(it) = name.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok())
            && path.join("state.json").is_file()
        {
            found.push((it, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop().map(|(_, p)| p))
}

/// Writes a checkpoint and removes the older ones. Returns its folder.
pub fn save(run_dir: &Path, vs: &nn::VarStore, opt: &Sgd, state: &TrainState) -> Result<PathBuf> {
    let dest = ckpt_dir(run_dir, state.iteration);
    let tmp = dest.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    crate::models::save_weights(vs, &tmp.join("model.safetensors"))?;
    opt.save(&tmp.join("optim.safetensors"))?;
    write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    for (it, old) in list(run_dir)? {
        if it < state.iteration {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(dest)
}

/// Loads a checkpoint into a var store and an optimizer built for the same network.
pub fn load(ckpt: &Path, vs: &mut nn::VarStore, opt: &mut Sgd) -> Result<TrainState> {
    vs.load(ckpt.join("model.safetensors"))
        .with_context(|| format!("loading weights from {}", ckpt.display()))?;
    opt.load(&ckpt.join("optim.safetensors"))?;
    let path = ckpt.join("state.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
