//! The trainer's bookkeeping: when rows, evaluations and checkpoints fall ([`Cadence`]), the loss
//! and error of the updates since the last row ([`Window`]), and what the user sees ([`Progress`]:
//! a progress bar on a terminal, log lines elsewhere).

use super::config::TrainConfig;
use super::metrics::MetricsRow;
use crate::dist::Replicas;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// When a run writes a metrics row, evaluates and checkpoints, in completed updates.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    log_every: u64,
    eval_every: u64,
    checkpoint_every: u64,
    iterations: u64,
}

impl Cadence {
    pub fn of(t: &TrainConfig) -> Self {
        Cadence {
            log_every: t.log_every,
            eval_every: t.eval_every,
            checkpoint_every: t.checkpoint_every,
            iterations: t.iterations,
        }
    }

    /// A metrics row after this update (every `log_every`, and the last).
    pub fn is_row(&self, it: u64) -> bool {
        it.is_multiple_of(self.log_every) || it == self.iterations
    }

    /// An evaluation with this row.
    pub fn is_eval(&self, it: u64) -> bool {
        it.is_multiple_of(self.eval_every) || it == self.iterations
    }

    /// A checkpoint with this row.
    pub fn is_checkpoint(&self, it: u64) -> bool {
        it.is_multiple_of(self.checkpoint_every) || it == self.iterations
    }
}

/// A [`Window`]'s sums as a checkpoint keeps them (the f64 loss sum exactly: JSON with serde_json's
/// float_roundtrip gives back the same bits).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct WindowSums {
    pub loss: f64,
    pub wrong: i64,
    pub batches: u64,
    pub images: u64,
}

/// Loss and misclassified images of the updates since the window began, summed on the device so
/// that no update waits for it.
pub struct Window {
    loss: Tensor,
    wrong: Tensor,
    batches: u64,
    pub images: u64,
    device: Device,
}

impl Window {
    pub fn new(device: Device) -> Self {
        Window {
            loss: Tensor::zeros([], (Kind::Double, device)),
            wrong: Tensor::zeros([], (Kind::Int64, device)),
            batches: 0,
            images: 0,
            device,
        }
    }

    pub fn add(&mut self, loss: &Tensor, wrong: &Tensor, images: u64) {
        tch::no_grad(|| {
            self.loss += loss.to_kind(Kind::Double);
            self.wrong += wrong;
        });
        self.batches += 1;
        self.images += images;
    }

    /// This window, leaving a new empty one in its place.
    pub fn take(&mut self) -> Window {
        let fresh = Window::new(self.device);
        std::mem::replace(self, fresh)
    }

    /// The sums so far, for a checkpoint taken inside the window (reading them waits for the device).
    pub fn sums(&self) -> WindowSums {
        WindowSums {
            loss: self.loss.double_value(&[]),
            wrong: self.wrong.int64_value(&[]),
            batches: self.batches,
            images: self.images,
        }
    }

    /// A window that carries on from `sums`: what follows adds up exactly as if never paused.
    pub fn from_sums(device: Device, sums: &WindowSums) -> Self {
        Window {
            loss: Tensor::from(sums.loss).to_device(device),
            wrong: Tensor::from(sums.wrong).to_device(device),
            batches: sums.batches,
            images: sums.images,
            device,
        }
    }

    /// The window's averages; reading them waits for the device.
    pub fn read(&self) -> Averages {
        self.sums().read()
    }

    /// The window's sums over every replica (`dp`), as one process training the global batch
    /// would have them: each replica adds its share of the global batch's loss (its own divided
    /// by the world size, see [`Window::add`]) and its own images.
    pub fn global(&self, dp: Option<&Replicas>) -> Result<WindowSums> {
        let s = self.sums();
        let Some(dp) = dp else { return Ok(s) };
        let total = dp.sum(&[s.loss, s.wrong as f64, s.images as f64])?;
        Ok(WindowSums { loss: total[0], wrong: total[1] as i64, batches: s.batches, images: total[2] as u64 })
    }
}

/// A window's mean loss per batch and training error (% of its images).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Averages {
    pub loss: f64,
    pub error: f64,
}

impl WindowSums {
    pub fn read(&self) -> Averages {
        Averages {
            loss: self.loss / self.batches.max(1) as f64,
            error: 100.0 * self.wrong as f64 / self.images.max(1) as f64,
        }
    }
}

/// What a run shows while it trains.
pub struct Progress {
    bar: ProgressBar,
    label: String,
    use_bar: bool,
    /// Shows nothing (a replica other than rank 0).
    silent: bool,
    iterations: u64,
    /// When the run started or resumed in this process, and its iteration then: the pace of the
    /// time left.
    since: (Instant, u64),
    /// Since the last row: training throughput leaves evaluations and checkpoints out.
    clock: Instant,
}

impl Progress {
    /// A run of `iterations`, at iteration `at` now.
    pub fn new(label: String, iterations: u64, at: u64, use_bar: bool) -> Self {
        let bar = if use_bar {
            let bar = ProgressBar::new(iterations).with_position(at);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:25}] {pos}/{len} it, {per_sec}, ETA {eta} {msg}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar.reset_eta();
            bar
        } else {
            ProgressBar::hidden()
        };
        let since = (Instant::now(), at);
        Progress { bar, label, use_bar, silent: false, iterations, since, clock: Instant::now() }
    }

    /// The same, showing nothing: rank 0 speaks for the replicas.
    pub fn silent(self) -> Self {
        self.bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        Progress { silent: true, use_bar: false, ..self }
    }

    pub fn set_position(&self, it: u64) {
        self.bar.set_position(it);
    }

    /// A one-off event (the warm-up ended, the rate was divided), above the bar.
    pub fn note(&self, msg: &str) {
        if self.silent {
            return;
        }
        self.bar.suspend(|| eprintln!("{}: {msg}", self.label));
    }

    /// Images per second over `images` since the last row.
    pub fn rate(&self, images: u64) -> f64 {
        images as f64 / self.clock.elapsed().as_secs_f64()
    }

    pub fn restart_clock(&mut self) {
        self.clock = Instant::now();
    }

    /// A metrics row (with the images per second since the previous one): on the bar's message,
    /// or as a log line.
    pub fn row(&self, r: &MetricsRow, rate: f64) {
        let (it, epoch, seconds) = (r.iteration, r.epoch, r.seconds);
        let shown = r.test_error.map(|v| format!(", test err {v:.2}%")).unwrap_or_default()
            + &r.val_error.map(|v| format!(", val err {v:.2}%")).unwrap_or_default();
        let msg = format!(
            "lr {:.4}, loss {:.3}, train err {:.2}%{shown}, {rate:.0} img/s",
            r.lr, r.train_loss, r.train_error
        );
        if self.use_bar {
            self.bar.set_message(msg);
        } else if !self.silent {
            let (start, at) = self.since;
            let left = seconds_left(
                self.iterations.saturating_sub(it),
                it.saturating_sub(at),
                start.elapsed().as_secs_f64(),
            )
            .map_or(String::new(), |s| format!(", {} left in the run", about(s)));
            eprintln!(
                "{}: it {it}/{} (epoch {epoch:.1}) {msg}, {seconds:.0} s{left}",
                self.label, self.iterations
            );
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The seconds `left` iterations take at the pace of the last `done` in `elapsed` seconds
/// (evaluations and checkpoints included, so a moment's slowdown moves it little); none before
/// the first.
fn seconds_left(left: u64, done: u64, elapsed: f64) -> Option<f64> {
    (done > 0).then(|| left as f64 * elapsed / done as f64)
}

/// `about 3 days 4 h`, `about 5 h 10 min`, `about 12 min`, `under a minute`: a time to come.
pub fn about(seconds: f64) -> String {
    let m = (seconds / 60.0).round() as u64;
    match m {
        0 => "under a minute".into(),
        1..60 => format!("about {m} min"),
        60..1440 => format!("about {} h {} min", m / 60, m % 60),
        _ => format!("about {} days {} h", m / 1440, m % 1440 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::{about, seconds_left};

    #[test]
    fn times_to_come_read_as_people_say_them() {
        assert_eq!(about(20.0), "under a minute");
        assert_eq!(about(12.0 * 60.0), "about 12 min");
        assert_eq!(about(5.0 * 3600.0 + 600.0), "about 5 h 10 min");
        assert_eq!(about(3.0 * 86400.0 + 4.0 * 3600.0), "about 3 days 4 h");
    }

    #[test]
    fn the_time_left_is_at_the_pace_since_the_run_started_or_resumed() {
        assert_eq!(seconds_left(300, 100, 50.0), Some(150.0));
        assert_eq!(seconds_left(0, 100, 50.0), Some(0.0));
        assert_eq!(seconds_left(300, 0, 50.0), None);
    }
}
