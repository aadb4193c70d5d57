//! Released results: finished runs copied from a scratch runs folder into `results/` (committed),
//! every file listed with its sha256 in `results/MANIFEST`; and unfinished runs' newest checkpoint
//! kept under `results/<table>/in-progress/`, so that a run can span machines or work trees that do
//! not survive (`release snapshot` before stopping, `release restore` before resuming).
//!
//! A released run holds what a reader needs and nothing to resume from: `config.toml`,
//! `metrics.csv`, `final.json`, `model.safetensors`, and where the run recorded them its class
//! names and per-pixel mean. Its table folder holds the summary and the
//! figures, made by the same code as a sweep's.

use super::store::{RunDir, Store, StoredRun, run_file};
use crate::fsutil::write_atomic;
use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The files of a released run.
pub const RELEASED_FILES: [&str; 4] =
    [run_file::CONFIG, run_file::METRICS, run_file::FINAL, run_file::WEIGHTS];

/// Released too where the run has them (runs since CIFAR-100 and folders were added record them):
/// what `predict` and python/resnet_repro_torch.py need besides the weights.
pub const RELEASED_IF_THERE: [&str; 2] = [run_file::CLASS_INDEX, run_file::DATA_MEAN];

/// The folder under `results/` of an unfinished run's newest checkpoint.
pub const IN_PROGRESS: &str = "in-progress";

/// The manifest's header line.
const MANIFEST_HEADER: &str = "# sha256\tbytes\tfile\tcommit\tcommand";

/// `results/` (or another root): released tables, each a run store, and the manifest.
#[derive(Debug, Clone)]
pub struct Release {
    pub root: PathBuf,
}

/// One line of `results/MANIFEST`: a released file, its digest and size, and what made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub sha256: String,
    pub bytes: u64,
    /// Relative to the release's root.
    pub file: PathBuf,
    pub commit: String,
    pub command: String,
}

impl Release {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Release { root: root.into() }
    }

    /// The released runs of a table (`results/table6`), a run store like `runs/table6`.
    pub fn table(&self, name: &str) -> Store {
        Store::new(self.root.join(name))
    }

    /// The unfinished runs of a table (`results/table6/in-progress`), in the same layout.
    pub fn in_progress(&self, name: &str) -> Store {
        Store::new(self.root.join(name).join(IN_PROGRESS))
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("MANIFEST")
    }

    /// Copies every finished run of `runs` into the table `name` (replacing an earlier copy and
    /// the run's in-progress snapshot), and lists its files in the manifest with the commit that
    /// finished it (its `final.json`'s) and `command`. A run released before, byte for byte, is
    /// left as it is with its entries (and the command that trained it). Returns the runs released.
    pub fn publish(&self, runs: &Store, name: &str, command: &str) -> Result<Vec<StoredRun>> {
        let (table, pending) = (self.table(name), self.in_progress(name));
        let mut released = Vec::new();
        let mut entries = self.manifest()?;
        for run in runs.runs()?.into_iter().filter(|r| r.dir.is_finished()) {
            let dest = table.run(&run.config);
            if same_files(&run.dir, &dest)? {
                continue; // released before (restored by `restore_released`): its entries stay
            }
            let commit = run.dir.final_record()?.map(|f| f.commit).unwrap_or_default();
            let files: Vec<&str> = released_files(&run.dir).collect();
            self.copy_listed(&mut entries, (&run.dir, &dest), &files, (&commit, command))?;
            let stale = pending.run(&run.config).path;
            if stale.is_dir() {
                std::fs::remove_dir_all(&stale).with_context(|| format!("removing {}", stale.display()))?;
            }
            released.push(StoredRun { dir: dest, config: run.config });
        }
        entries.sort_by(|a, b| a.file.cmp(&b.file));
        self.write_manifest(&entries)?;
        Ok(released)
    }

    /// Copies `files` of the run `from` into `to`, each listed in `entries` (replacing an older
    /// entry) with `commit` and `command`.
    fn copy_listed(
        &self,
        entries: &mut Vec<Entry>,
        (from, to): (&RunDir, &RunDir),
        files: &[&str],
        (commit, command): (&str, &str),
    ) -> Result<()> {
        std::fs::create_dir_all(&to.path).with_context(|| format!("creating {}", to.path.display()))?;
        for f in files {
            let file = to.path.join(f);
            copy(&from.path.join(f), &file)?;
            let rel = file.strip_prefix(&self.root).unwrap_or(&file).to_path_buf();
            entries.retain(|e| e.file != rel);
            entries.push(Entry {
                sha256: sha256(&file)?,
                bytes: size(&file)?,
                file: rel,
                commit: commit.into(),
                command: command.into(),
            });
        }
        Ok(())
    }

    /// Copies every finished detection run of `runs` (`<run>/seed<k>/`, as
    /// [`super::detect_scenes`] lays them out) into the table `name`, as [`Release::publish`]
    /// does a classification run: [`RELEASED_FILES`], listed in the manifest with the commit
    /// from its `final.json`. A run released before, byte for byte, is left as it is. Returns
    /// the folders released.
    pub fn publish_detection(&self, runs: &Store, name: &str, command: &str) -> Result<Vec<PathBuf>> {
        let mut entries = self.manifest()?;
        let mut released = Vec::new();
        for run in crate::fsutil::subdirs(&runs.root)? {
            for seed in crate::fsutil::subdirs(&run)? {
                let from = RunDir { path: seed.clone() };
                let Some(record) = from.final_as::<super::detect_scenes::SceneRecord>()? else { continue };
                let rel = seed.strip_prefix(&runs.root).unwrap_or(&seed);
                let to = RunDir { path: self.root.join(name).join(rel) };
                if same_listed(&from, &to, &RELEASED_FILES)? {
                    continue;
                }
                self.copy_listed(
                    &mut entries,
                    (&from, &to),
                    &RELEASED_FILES,
                    (&record.provenance.commit, command),
                )?;
                released.push(to.path);
            }
        }
        entries.sort_by(|a, b| a.file.cmp(&b.file));
        self.write_manifest(&entries)?;
        Ok(released)
    }

    /// Copies every unfinished run of `runs` that has a checkpoint into the table's in-progress
    /// folder: its configuration, metrics and newest checkpoint, what resuming needs. Returns each
    /// run's folder there and the checkpoint's iteration.
    pub fn snapshot(&self, runs: &Store, name: &str) -> Result<Vec<(RunDir, u64)>> {
        let pending = self.in_progress(name);
        let mut kept = Vec::new();
        for run in runs.runs()?.into_iter().filter(|r| !r.dir.is_finished()) {
            let Some((it, ckpt)) = crate::train::checkpoint::list(&run.dir.path)?.pop() else { continue };
            let dest = pending.run(&run.config);
            if dest.path.is_dir() {
                std::fs::remove_dir_all(&dest.path)
                    .with_context(|| format!("removing {}", dest.path.display()))?;
            }
            copy_resumable(&run.dir, &ckpt, &dest)?;
            kept.push((dest, it));
        }
        Ok(kept)
    }

    /// Copies the table's in-progress runs into `runs` where `runs` has none of them or an older
    /// checkpoint, so that the same training command resumes them. Returns each run restored and
    /// its checkpoint's iteration.
    pub fn restore(&self, runs: &Store, name: &str) -> Result<Vec<(RunDir, u64)>> {
        let mut restored = Vec::new();
        for run in self.in_progress(name).runs()? {
            let Some((it, ckpt)) = crate::train::checkpoint::list(&run.dir.path)?.pop() else { continue };
            let dest = runs.run(&run.config);
            let theirs = crate::train::checkpoint::list(&dest.path)?.pop().map(|(i, _)| i);
            if dest.is_finished() || theirs.is_some_and(|i| i >= it) {
                continue;
            }
            copy_resumable(&run.dir, &ckpt, &dest)?;
            restored.push((dest, it));
        }
        Ok(restored)
    }

    /// Copies the table's released runs into `runs` where `runs` has no finished copy of them, so
    /// that the training command skips them (finished before) instead of training them again in
    /// a fresh work tree, and its summary and figures include them. Returns each run restored.
    pub fn restore_released(&self, runs: &Store, name: &str) -> Result<Vec<RunDir>> {
        let mut restored = Vec::new();
        for run in self.table(name).runs()? {
            let dest = runs.run(&run.config);
            if dest.is_finished() {
                continue;
            }
            std::fs::create_dir_all(&dest.path)
                .with_context(|| format!("creating {}", dest.path.display()))?;
            for f in released_files(&run.dir) {
                copy(&run.dir.path.join(f), &dest.path.join(f))?;
            }
            restored.push(dest);
        }
        Ok(restored)
    }

    /// The manifest's entries (none if there is no manifest yet).
    pub fn manifest(&self) -> Result<Vec<Entry>> {
        let path = self.manifest_path();
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
            .map(|(i, l)| parse_entry(l).with_context(|| format!("{} line {}", path.display(), i + 1)))
            .collect()
    }

    fn write_manifest(&self, entries: &[Entry]) -> Result<()> {
        let mut text = format!("{MANIFEST_HEADER}\n");
        for e in entries {
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                e.sha256,
                e.bytes,
                e.file.display(),
                e.commit,
                e.command
            ));
        }
        write_atomic(&self.manifest_path(), text.as_bytes())
    }

    /// Checks every file the manifest lists against its size and sha256: the number checked, or
    /// an error naming each file that differs or is missing.
    pub fn check(&self) -> Result<usize> {
        let entries = self.manifest()?;
        let mut bad = Vec::new();
        for e in &entries {
            let path = self.root.join(&e.file);
            if !path.is_file() {
                bad.push(format!("{}: missing", path.display()));
            } else if size(&path)? != e.bytes || sha256(&path)? != e.sha256 {
                bad.push(format!(
                    "{}: not the file the manifest lists (size or sha256 differs)",
                    path.display()
                ));
            }
        }
        ensure!(bad.is_empty(), "{}:\n  {}", self.manifest_path().display(), bad.join("\n  "));
        Ok(entries.len())
    }
}

/// The files of `run` a release holds: [`RELEASED_FILES`], and [`RELEASED_IF_THERE`] where it has them.
fn released_files(run: &RunDir) -> impl Iterator<Item = &'static str> + '_ {
    let optional = RELEASED_IF_THERE.into_iter().filter(|f| run.path.join(f).is_file());
    RELEASED_FILES.into_iter().chain(optional)
}

/// Whether `dest` holds every file of `run` a release holds, byte for byte.
fn same_files(run: &RunDir, dest: &RunDir) -> Result<bool> {
    same_listed(run, dest, &released_files(run).collect::<Vec<_>>())
}

/// Whether `dest` holds each of `files` of `run`, byte for byte.
fn same_listed(run: &RunDir, dest: &RunDir, files: &[&str]) -> Result<bool> {
    for f in files {
        let (ours, theirs) = (run.path.join(f), dest.path.join(f));
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        if !theirs.is_file() || read(&ours)? != read(&theirs)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn parse_entry(line: &str) -> Result<Entry> {
    let f: Vec<&str> = line.splitn(5, '\t').collect();
    let [sha256, bytes, file, commit, command] = f[..] else {
        bail!("expected 5 tab-separated fields (sha256, bytes, file, commit, command): {line:?}")
    };
    ensure!(sha256.len() == 64 && sha256.chars().all(|c| c.is_ascii_hexdigit()), "not a sha256: {sha256:?}");
    let bytes = bytes.parse().with_context(|| format!("not a size: {bytes:?}"))?;
    Ok(Entry {
        sha256: sha256.into(),
        bytes,
        file: file.into(),
        commit: commit.into(),
        command: command.into(),
    })
}

/// A file's sha256, in hex.
pub fn sha256(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len())
}

/// What resuming `run` from its checkpoint `ckpt` needs, copied into `dest`: the configuration,
/// the metrics, the checkpoint's files.
fn copy_resumable(run: &RunDir, ckpt: &Path, dest: &RunDir) -> Result<()> {
    let ckpt_dest = dest.path.join(ckpt.file_name().context("a checkpoint folder's name")?);
    std::fs::create_dir_all(&ckpt_dest).with_context(|| format!("creating {}", ckpt_dest.display()))?;
    for f in [run_file::CONFIG, run_file::METRICS] {
        copy(&run.path.join(f), &dest.path.join(f))?;
    }
    for f in files_in(ckpt)? {
        copy(&f, &ckpt_dest.join(f.file_name().context("a file name")?))?;
    }
    Ok(())
}

/// Copies `from` to `to` durably (a temporary name, fsynced, renamed).
fn copy(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_atomic(to, &bytes)
}

/// The files (not folders) in `dir`, sorted.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// A finished CIFAR-style run's test (and validation) error, measured again from its
/// `model.safetensors` on the data its configuration names, as the training loop measured it at
/// the end: the same images, per-pixel mean and layout. On the CPU it reproduces `final.json`'s
/// numbers exactly.
pub fn reevaluate(
    run: &RunDir,
    data: &crate::data::DataOptions,
    device: tch::Device,
) -> Result<crate::train::Evaluation> {
    use crate::train::TrainData;
    let cfg = run.config()?;
    let Some(opts) = cfg.data.tensors() else {
        bail!("{}: an image-folder run; `evaluate --val-dir` tests those", run.path.display())
    };
    let ds = crate::data::Dataset::load(&cfg.data, data)?;
    let prepared = crate::data::Prepared::new(&ds, opts.val_split, device)?;
    let loaded = run.load_net(&cfg, device)?;
    let mut feed = crate::train::TensorFeed::new(&prepared, cfg.seed, cfg.train.batch_size, opts);
    tch::no_grad(|| feed.evaluate(&loaded.net, loaded.format))
}
