//! Runs that survive what machines do to them, tested on real processes (`cifar_depth_sweep` on a
//! tiny experiment over real Fashion-MNIST): signals and kill -9 at random moments, a corrupt
//! newest checkpoint, a write that fails. After each, the resumed run must end with the same bytes
//! of weights and the same metrics (but for the wall-time column) as an uninterrupted run.
//! And the detector's trainer signalled in this process (no other test here trains in-process).

mod common;

use rand::{Rng, SeedableRng};
use resnet_repro::train::metrics::read_metrics;
use std::io::BufRead;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

const EXPERIMENT: &str = r#"
name = "durability"
preset = "quick"
seeds = [0]

[data]
dataset = "fashion-mnist"
test_subset = 200

[train]
batch_size = 32
lr = 0.05
milestones = [150]
iterations = 200
log_every = 20
eval_every = 100
checkpoint_every = 60

[[runs]]
depth = 8
residual = true
"#;

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// A folder with the experiment file, for one test.
fn workspace(name: &str) -> PathBuf {
    assert!(
        Path::new(FASHION_MNIST).is_dir(),
        "these tests train on real Fashion-MNIST: apt-get install dataset-fashion-mnist (.ci/run does)"
    );
    let dir = std::env::temp_dir().join(format!("resnet-repro-durability-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tiny.toml"), EXPERIMENT).unwrap();
    dir
}

/// The run's folder in a workspace.
fn run_dir(ws: &Path) -> PathBuf {
    ws.join("out/fashion-mnist-quick/resnet8/seed0")
}

/// The sweep on the workspace's experiment, one CPU thread, with its stderr read line by line.
struct Sweep {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Sweep {
    /// Starts it; `file_limit`: a file-size limit (bytes) on the process.
    fn start(ws: &Path, file_limit: Option<u64>) -> Sweep {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cifar_depth_sweep"));
        cmd.arg("--config").arg(ws.join("tiny.toml")).arg("--data-dir").arg(ws.join("data"));
        cmd.args(["--no-download", "--device", "cpu", "--threads", "1"]);
        cmd.arg("--out").arg(ws.join("out")).arg("--plots").arg(ws.join("plots"));
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some(bytes) = file_limit {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("starting cifar_depth_sweep");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Sweep { child, lines, log: Vec::new() }
    }

    /// Waits for a stderr line containing `pat`; false if the process ended first.
    fn wait_for(&mut self, pat: &str) -> bool {
        while let Ok(line) = self.lines.recv() {
            let hit = line.contains(pat);
            self.log.push(line);
            if hit {
                return true;
            }
        }
        false
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the end: (exit code, or 128 + the signal that killed it; all of stderr).
    fn finish(mut self) -> (i32, String) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(300)) {
            self.log.push(line);
        }
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or_else(|| 128 + status.signal().unwrap()), self.log.join("\n"))
    }
}

/// Runs the sweep to its end; asserts it succeeded.
fn complete(ws: &Path) -> String {
    let (code, log) = Sweep::start(ws, None).finish();
    assert_eq!(code, 0, "the sweep failed:\n{log}");
    log
}

/// The uninterrupted run every test compares with (trained once per test binary).
fn baseline() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let ws = workspace("baseline");
        complete(&ws);
        run_dir(&ws)
    })
}

/// The run in `ws` ended as the uninterrupted one: the same weight bytes, the same metrics rows
/// but for the wall time, the same final test error.
fn assert_same_as_baseline(ws: &Path, what: &str) {
    let (a, b) = (baseline(), run_dir(ws));
    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(bytes(a) == bytes(&b), "{what}: the final weights differ from an uninterrupted run's");
    let rows = |d: &Path| -> Vec<_> {
        let rows = read_metrics(&d.join("metrics.csv")).unwrap();
        rows.into_iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {:?} {:?}",
                    r.iteration, r.epoch, r.lr, r.train_loss, r.train_error, r.test_error, r.val_error
                )
            })
            .collect()
    };
    assert_eq!(rows(a), rows(&b), "{what}: metrics.csv differs from an uninterrupted run's");
    let test_error = |d: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("final.json")).unwrap()).unwrap();
        v["test_error"].as_f64().unwrap()
    };
    assert_eq!(test_error(a), test_error(&b), "{what}: final test error");
}

/// The iteration the newest checkpoint holds (0 without one).
fn newest_checkpoint(ws: &Path) -> u64 {
    let names = std::fs::read_dir(run_dir(ws)).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    names
        .iter()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("ckpt-")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Starts the sweep, waits until it has logged one of the next three metrics rows (at random),
/// then after a random delay of up to a few steps sends `sigs`; returns its exit.
fn hit(ws: &Path, rng: &mut rand_chacha::ChaCha8Rng, sigs: &[i32]) -> (i32, String) {
    // At most row 160: a kill there lands before the run's end (200) however fast the machine.
    let row = ((newest_checkpoint(ws) / 20 + rng.random_range(1..=3)) * 20).min(160);
    let mut sweep = Sweep::start(ws, None);
    if sweep.wait_for(&format!(": it {row}/")) {
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        for &s in sigs {
            sweep.signal(s);
        }
    }
    sweep.finish()
}

#[test]
fn signals_at_random_moments_stop_at_a_checkpoint_and_the_resumed_run_is_bit_identical() {
    let ws = workspace("signals");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut stopped_at = Vec::new();
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGTERM, libc::SIGINT] {
        let (code, log) = hit(&ws, &mut rng, &[sig]);
        if code == 0 {
            break; // it finished before the signal came
        }
        assert_eq!(code, 75, "a signal must exit with 75 (interrupted, resumable):\n{log}");
        let last: Vec<&str> = log.lines().rev().take(2).collect();
        assert!(last[1] == "Resume with the same command:" && last[0].contains("cifar_depth_sweep"), "{log}");
        let line =
            log.lines().find(|l| l.starts_with("stopped by SIG")).expect("a line saying what stopped it");
        stopped_at.push(newest_checkpoint(&ws));
        assert!(line.contains(&format!("at iteration {}", stopped_at.last().unwrap())), "{line}");
    }
    // A second signal exits at once, with 128 + its number (two different ones: a second SIGTERM
    // sent while the first is pending would merge with it).
    let (code, log) = hit(&ws, &mut rng, &[libc::SIGTERM, libc::SIGINT]);
    let at_once = [128 + libc::SIGTERM, 128 + libc::SIGINT];
    assert!(at_once.contains(&code) || code == 0, "a second signal: exit {code}\n{log}");
    complete(&ws);
    println!(
        "stopped by signals at iterations {stopped_at:?}, then a double SIGTERM, then resumed to the end"
    );
    assert!(stopped_at.len() >= 3, "too few signals landed during training: {stopped_at:?}");
    assert_same_as_baseline(&ws, "after signals");
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn kill_9_at_random_moments_then_resume_is_bit_identical() {
    let ws = workspace("kill9");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let mut reached = Vec::new();
    for attempt in 0..12 {
        // Every other kill comes at a random moment from the start: loading, resuming, rewriting
        // metrics.csv, or training.
        let (code, log) = if attempt % 2 == 0 {
            hit(&ws, &mut rng, &[libc::SIGKILL])
        } else {
            let sweep = Sweep::start(&ws, None);
            std::thread::sleep(Duration::from_millis(rng.random_range(0..2000)));
            sweep.signal(libc::SIGKILL);
            sweep.finish()
        };
        if code == 0 {
            break;
        }
        assert_eq!(code, 128 + libc::SIGKILL, "{log}");
        reached.push(newest_checkpoint(&ws));
    }
    complete(&ws);
    println!(
        "killed {} times (newest checkpoint after each: {reached:?}), then resumed to the end",
        reached.len()
    );
    // How many land depends on the machine's speed (a kill from the start may come after the
    // end); on this 2-core CPU 6 to 12 have.
    assert!(reached.len() >= 6, "too few kills landed before the run finished: {reached:?}");
    assert!(reached.iter().any(|&it| it > 0), "no kill came after a checkpoint: {reached:?}");
    assert_same_as_baseline(&ws, "after kill -9");
    std::fs::remove_dir_all(&ws).unwrap();
}

/// Stops the run with SIGTERM once it has logged iteration `after`; returns its checkpoints.
fn stop_after(ws: &Path, after: u64) -> Vec<PathBuf> {
    let mut sweep = Sweep::start(ws, None);
    assert!(sweep.wait_for(&format!(": it {after}/")));
    sweep.signal(libc::SIGTERM);
    let (code, log) = sweep.finish();
    assert_eq!(code, 75, "{log}");
    let mut ckpts: Vec<PathBuf> = std::fs::read_dir(run_dir(ws))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("ckpt-"))
        .collect();
    ckpts.sort();
    ckpts
}

#[test]
fn an_unreadable_newest_checkpoint_is_set_aside_and_the_one_before_resumes() {
    let ws = workspace("corrupt");
    let ckpts = stop_after(&ws, 80);
    assert_eq!(ckpts.len(), 2, "the newest two checkpoints are kept: {ckpts:?}");
    let (older, newest) = (&ckpts[0], &ckpts[1]);
    let model = newest.join("model.safetensors");
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(len / 2).unwrap();
    let state = older.join("state.json");
    let good_state = std::fs::read(&state).unwrap();
    std::fs::write(&state, b"{\"iteration\": 6").unwrap();

    // Neither can be read: an error naming both, and nothing moved.
    let (code, log) = Sweep::start(&ws, None).finish();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("no checkpoint in") && log.contains("move its ckpt-* folders"), "{log}");
    assert!(
        log.contains(&model.display().to_string()) && log.contains(&state.display().to_string()),
        "{log}"
    );
    assert!(newest.is_dir() && older.is_dir());

    // The older one readable again: a warning naming the newest's file, which is set aside.
    std::fs::write(&state, good_state).unwrap();
    let log = complete(&ws);
    let warning = log.lines().find(|l| l.contains("warning")).unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains(&model.display().to_string()) && warning.contains("set aside"), "{warning}");
    assert!(newest.with_extension("corrupt").join("model.safetensors").is_file(), "the evidence is kept");
    assert_same_as_baseline(&ws, "resumed from the checkpoint before a corrupt one");
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn a_failed_checkpoint_write_is_a_clear_error_and_the_previous_checkpoint_still_loads() {
    let ws = workspace("write-failure");
    let before = stop_after(&ws, 20);
    // The weights (~300 KB) no longer fit under a 64 KB file-size limit.
    let (code, log) = Sweep::start(&ws, Some(64 * 1024)).finish();
    assert_eq!(code, 1, "{log}");
    let error = log.lines().skip_while(|l| !l.starts_with("Error:")).collect::<Vec<_>>().join("\n");
    assert!(error.contains("model.safetensors") && error.contains("File too large"), "{log}");
    let after: Vec<PathBuf> = before.iter().filter(|p| p.join("state.json").is_file()).cloned().collect();
    assert_eq!(before, after, "the previous checkpoint is intact");
    complete(&ws);
    assert_same_as_baseline(&ws, "resumed after a failed write");
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn two_workers_share_a_sweep_each_run_trained_once_and_one_summary() {
    let ws = workspace("workers");
    let four = EXPERIMENT
        .replace("seeds = [0]", "seeds = [0, 1, 2, 3]")
        .replace("iterations = 200", "iterations = 60");
    std::fs::write(ws.join("tiny.toml"), four).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/workers");
    let mut cmd = Command::new(script);
    cmd.arg("2").arg(env!("CARGO_BIN_EXE_cifar_depth_sweep"));
    cmd.arg("--config").arg(ws.join("tiny.toml")).arg("--data-dir").arg(ws.join("data"));
    cmd.args(["--no-download", "--device", "cpu"]);
    cmd.arg("--out").arg(ws.join("out")).arg("--plots").arg(ws.join("plots"));
    let out = cmd.output().unwrap();
    let (stdout, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("worker 0/2: cpu, 1 threads") && log.contains("worker 1/2: cpu, 1 threads"),
        "{log}"
    );
    for seed in 0..4 {
        let trained =
            log.lines().filter(|l| l.contains(&format!("] resnet8 seed{seed}: test error"))).count();
        assert_eq!(trained, 1, "seed {seed} trained {trained} times:\n{log}");
        let rows = read_metrics(&ws.join(format!("out/fashion-mnist-quick/resnet8/seed{seed}/metrics.csv")))
            .unwrap();
        let its: Vec<u64> = rows.iter().map(|r| r.iteration).collect();
        assert_eq!(its, [20, 40, 60], "seed {seed}: metrics rows");
    }
    let skipped = log.lines().filter(|l| l.contains("is training it; skipped")).count();
    println!("two workers, 4 runs: each trained once, {skipped} skips of a run the other held");
    let summary = std::fs::read_to_string(ws.join("out/summary.md")).unwrap();
    assert!(summary.contains("| ResNet-8 | test | 4 |"), "{summary}");
    assert!(stdout.contains("summary.md"), "the last worker writes the summary:\n{stdout}");
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn a_signalled_detection_run_stops_at_its_next_row_but_finishes_at_its_last() {
    use common::detect::{tiny_detector, tiny_recipe, tiny_scenes};
    use resnet_repro::detect::train::train;
    use resnet_repro::interrupt::Interrupted;
    resnet_repro::interrupt::install().unwrap();
    // SAFETY: raise(3) of a signal whose handler only sets flags.
    assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
    assert_eq!(resnet_repro::interrupt::requested(), Some("SIGTERM"));
    let tmp = std::env::temp_dir().join(format!("resnet-repro-durability-{}-detect", std::process::id()));
    let files = resnet_repro::experiment::RunDir { path: tmp.clone() }.files();
    let (set, recipe) = (tiny_scenes(), tiny_recipe(2)); // a row every update, checkpoints at 2
    let (mut vs, det) = tiny_detector(3);
    let e = train(&det, &mut vs, &set, &recipe, (&files, 7, "det"), None).unwrap_err();
    let stop = e.downcast_ref::<Interrupted>().unwrap_or_else(|| panic!("not a stop: {e:#}"));
    assert_eq!(stop.at, "det at iteration 1");
    assert!(tmp.join("ckpt-00000001/model.safetensors").is_file(), "no checkpoint where it stopped");
    assert!(!files.weights.exists(), "a stopped run wrote its final weights");
    // Resumed, with the stop still asked for: its next row is its last, where it finishes.
    let (mut vs, det) = tiny_detector(3);
    let state = train(&det, &mut vs, &set, &recipe, (&files, 7, "det"), None).unwrap();
    assert_eq!(state.iteration, 2);
    assert!(files.weights.is_file(), "a finished run has its final weights");
    std::fs::remove_dir_all(&tmp).unwrap();
}
