//! Checkpoints: the weights (BN statistics included), the optimizer's momentum buffers and the
//! training state, in `ckpt-<iteration>/` folders that appear only when complete (written as
//! `.tmp`, synced and renamed). The newest two are kept: if the newest cannot be read, a run resumes
//! from the one before.

use super::metrics::{MetricsWriter, Row};
use super::optim::Sgd;
use super::policy::PolicyState;
use super::progress::WindowSums;
use crate::fsutil::write_atomic;
use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a run's training files go. The run store decides the names; the trainer only writes.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub metrics: PathBuf,
    /// The final weights.
    pub weights: PathBuf,
    /// The folder the `ckpt-<iteration>` checkpoints go in.
    pub checkpoints: PathBuf,
}

use tch::{Tensor, nn};

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
    /// The logging window and the warm-up's window at this iteration (empty on a metrics row;
    /// partial when a signal stopped the run between rows), so that a resumed run's next row
    /// covers its iterations exactly as an uninterrupted run's does.
    #[serde(default)]
    pub windows: [WindowSums; 2],
}

const PREFIX: &str = "ckpt-";

/// A checkpoint folder's weights file.
pub const WEIGHTS_FILE: &str = "model.safetensors";

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

/// Writes a checkpoint durably (see [`crate::fsutil::commit`]) and keeps the one before it, a
/// fallback should this one ever be unreadable; older ones are removed. Returns its folder.
pub fn save(run_dir: &Path, vs: &nn::VarStore, opt: &Sgd, state: &TrainState) -> Result<PathBuf> {
    let dest = ckpt_dir(run_dir, state.iteration);
    let tmp = dest.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    crate::models::save_weights(vs, &tmp.join(WEIGHTS_FILE))?;
    opt.save(&tmp.join("optim.safetensors"))?;
    write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    if dest.exists() {
        // The same iteration again (a signal on a checkpoint's iteration): the older copy goes.
        std::fs::remove_dir_all(&dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    crate::fsutil::commit(&tmp, &dest)?;
    let older: Vec<PathBuf> =
        list(run_dir)?.into_iter().filter(|(it, _)| *it < state.iteration).map(|(_, p)| p).collect();
    for old in older.iter().rev().skip(1) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dest)
}

/// Resumes from the newest checkpoint that loads into `vs` and `opt`: its folder and state, or
/// `None` when the run has none. One that cannot be read (a truncated or garbled file, a tensor of
/// the wrong shape) is reported through `warn`, naming the file and why, and set aside as
/// `<name>.corrupt` (kept as evidence, never loaded again), and the one before it is tried. When
/// none can be read, an error names them all and says how to start over; nothing is moved.
pub fn resume(
    run_dir: &Path,
    vs: &mut nn::VarStore,
    opt: &mut Sgd,
    warn: impl Fn(&str),
) -> Result<Option<(PathBuf, TrainState)>> {
    let mut bad: Vec<(PathBuf, String)> = Vec::new();
    for (_, ckpt) in list(run_dir)?.into_iter().rev() {
        match load(&ckpt, vs, opt) {
            Ok(state) => {
                for (b, why) in &bad {
                    let aside = b.with_extension("corrupt");
                    std::fs::rename(b, &aside)
                        .with_context(|| format!("setting {} aside as {}", b.display(), aside.display()))?;
                    warn(&format!(
                        "{why}; set aside as {}, resuming from {} instead",
                        aside.display(),
                        ckpt.display()
                    ));
                }
                return Ok(Some((ckpt, state)));
            }
            Err(e) => bad.push((ckpt, format!("{e:#}"))),
        }
    }
    if bad.is_empty() {
        return Ok(None);
    }
    let why: Vec<String> = bad.iter().map(|(_, w)| format!("  {w}")).collect();
    anyhow::bail!(
        "no checkpoint in {} can be read:\n{}\nThey are left as they are. To start this run over, move its \
         ckpt-* folders and metrics.csv aside (or the whole run folder).",
        run_dir.display(),
        why.join("\n")
    )
}

/// Where a run goes on from: its newest readable checkpoint (see [`resume`]; its weights and
/// momentum loaded into `vs` and `opt`, its seed checked), else `fresh`; with its metrics file
/// opened to go on from there where this process writes (`writes`: alone, or rank 0).
pub fn resume_or_start<R: Row>(
    files: &RunFiles,
    (vs, opt): (&mut nn::VarStore, &mut Sgd),
    fresh: TrainState,
    (label, writes): (&str, bool),
) -> Result<(TrainState, Option<MetricsWriter<R>>)> {
    let warn = |msg: &str| eprintln!("{label}: warning: {msg}");
    let Some((ckpt, state)) = resume(&files.checkpoints, vs, opt, warn)? else {
        return Ok((fresh, writes.then(|| MetricsWriter::create(&files.metrics)).transpose()?));
    };
    ensure!(
        state.seed == fresh.seed,
        "{}: checkpoint of seed {}, not {}",
        ckpt.display(),
        state.seed,
        fresh.seed
    );
    if writes {
        eprintln!("{label}: resuming from {} (iteration {})", ckpt.display(), state.iteration);
    }
    let writer = writes.then(|| MetricsWriter::resume(&files.metrics, state.iteration, warn));
    Ok((state, writer.transpose()?))
}

/// [`resume_or_start`] for one replica of a data-parallel run (alone: the same): rank 0
/// resumes first (it may set a corrupt checkpoint aside) and writes the metrics, the others
/// then read what it chose, and every replica starts from rank 0's variables and momentum.
pub fn resume_replica<R: Row>(
    files: &RunFiles,
    (vs, opt): (&mut nn::VarStore, &mut Sgd),
    fresh: TrainState,
    (label, dp): (&str, Option<&crate::dist::Replicas>),
) -> Result<(TrainState, Option<MetricsWriter<R>>)> {
    let Some(dp) = dp else { return resume_or_start(files, (vs, opt), fresh, (label, true)) };
    let first =
        (dp.rank() == 0).then(|| resume_or_start(files, (vs, &mut *opt), fresh.clone(), (label, true)));
    // Every rank waits here for rank 0's choice; a failure there is every rank's.
    if !crate::dist::rank0_says(Some(dp), first.as_ref().is_some_and(|r| r.is_ok()))? {
        return first.unwrap_or_else(|| anyhow::bail!("rank {}: rank 0 could not resume the run", dp.rank()));
    }
    let mine = first.unwrap_or_else(|| resume_or_start(files, (vs, &mut *opt), fresh, (label, false)));
    let (state, writer) = crate::dist::all_ok(Some(dp), mine)?;
    dp.start(vs, (&opt.params, &mut opt.buffers), state.iteration)?;
    Ok((state, writer))
}

/// Loads a checkpoint into a var store and an optimizer built for the same network: every
/// variable must be in the file with its shape and type, and nothing else.
pub fn load(ckpt: &Path, vs: &mut nn::VarStore, opt: &mut Sgd) -> Result<TrainState> {
    let path = ckpt.join("state.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let state = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    load_weights(&ckpt.join(WEIGHTS_FILE), vs)?;
    opt.load(&ckpt.join("optim.safetensors"))?;
    Ok(state)
}

/// Copies a safetensors file's tensors into `vs`, checking names, shapes and types first (tch's
/// `VarStore::load` would broadcast a tensor of the wrong shape into a variable).
fn load_weights(path: &Path, vs: &mut nn::VarStore) -> Result<()> {
    let saved =
        Tensor::read_safetensors(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut by_name: HashMap<String, Tensor> = saved.into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut pairs = Vec::with_capacity(vars.len());
    for (name, var) in vars {
        let t = by_name.remove(&name).with_context(|| format!("{}: no tensor {name}", path.display()))?;
        ensure!(
            t.size() == var.size() && t.kind() == var.kind(),
            "{}: {name} is {:?} {:?}, the network's is {:?} {:?}",
            path.display(),
            t.kind(),
            t.size(),
            var.kind(),
            var.size()
        );
        pairs.push((var, t));
    }
    let extra: Vec<&String> = by_name.keys().collect();
    ensure!(extra.is_empty(), "{}: tensors the network does not have: {extra:?}", path.display());
    tch::no_grad(|| {
        for (mut var, t) in pairs {
            var.copy_(&t);
        }
    });
    Ok(())
}
