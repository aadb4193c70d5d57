//! The learning-rate policy: the step schedule of Sec. 4.2 (a base rate divided by 10 at fixed
//! iterations), the warm-up the paper uses for ResNet-110 and 1202 (a small rate until the training
//! error falls below 80%, then back to the base rate and the normal schedule), and the plateau rule
//! of Sec. 3.4. [`LrPolicy`] ties them together for the trainer; its state is saved with checkpoints.

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

/// The warm-up of Sec. 4.2: "we use 0.01 to warm up the training until the training error is below
/// 80% (about 400 iterations), and then go back to 0.1 and continue training".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Warmup {
    pub lr: f64,
    /// Training error, in percent, under which the warm-up ends.
    pub until_train_error_below: f64,
    /// How often (iterations) the error of the mini-batches since the last check is looked at.
    pub check_every: u64,
    /// NOTE: a deviation. The warm-up ends here at the latest, whatever the error: a cap the paper
    /// does not have (its warm-up ends by the error alone, "about 400 iterations"), so that a net
    /// that never gets below the threshold still trains.
    pub max_iterations: u64,
}

impl Warmup {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.lr > 0.0, "warmup.lr must be positive, got {}", self.lr);
        ensure!(self.check_every > 0, "warmup.check_every must be positive");
        ensure!(
            (0.0..=100.0).contains(&self.until_train_error_below),
            "warmup.until_train_error_below is a percentage, got {}",
            self.until_train_error_below
        );
        Ok(())
    }
}

impl Default for Warmup {
    fn default() -> Self {
        Warmup { lr: 0.01, until_train_error_below: 80.0, check_every: 10, max_iterations: 2000 }
    }
}

/// "Divided by 10 when the error plateaus" (Sec. 3.4), made precise: after `patience` evaluations
/// in a row without the validation error improving by `min_improvement` points, the rate is
/// multiplied by the schedule's decay, at most `max_decays` times. Never the test error: an
/// experiment with a plateau rule and no validation set is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plateau {
    pub patience: u32,
    pub min_improvement: f64,
    pub max_decays: u32,
}

impl Default for Plateau {
    fn default() -> Self {
        Plateau { patience: 5, min_improvement: 0.1, max_decays: 3 }
    }
}

/// Where the plateau rule stands; saved with checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct PlateauState {
    /// Rate divisions made by the rule so far.
    pub decays: u32,
    pub best: Option<f64>,
    pub since_best: u32,
}

impl PlateauState {
    /// Records an evaluation's error; returns true if the rate is divided now.
    pub fn update(&mut self, p: &Plateau, error: f64) -> bool {
        if self.best.is_none_or(|b| error < b - p.min_improvement) {
            self.best = Some(error);
            self.since_best = 0;
            return false;
        }
        self.since_best += 1;
        if self.since_best >= p.patience && self.decays < p.max_decays {
            self.decays += 1;
            self.since_best = 0;
            self.best = Some(error);
            return true;
        }
        false
    }
}

/// Step schedule: `lr * decay^k` after the k-th milestone; the warm-up rate while warming up.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    /// Iteration counts after which the rate is multiplied by `decay` (32k and 48k in the paper).
    pub milestones: Vec<u64>,
    pub decay: f64,
    pub warmup: Option<Warmup>,
}

impl Schedule {
    /// The rate of the update that follows `iteration` completed updates (with the plateau rule's
    /// divisions so far, if it is used).
    pub fn lr_at(&self, iteration: u64, warming_up: bool, plateau: &PlateauState) -> f64 {
        match &self.warmup {
            Some(w) if warming_up => w.lr,
            _ => {
                let passed = self.milestones.iter().filter(|&&m| iteration >= m).count() as i32;
                self.lr * self.decay.powi(passed + plateau.decays as i32)
            }
        }
    }
}

/// Tracks whether the warm-up is still on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WarmupState {
    /// No warm-up configured.
    None,
    Active,
    /// Ended after this many iterations; `capped` if `max_iterations` ended it.
    Done {
        at: u64,
        capped: bool,
    },
}

impl WarmupState {
    pub fn start(warmup: Option<&Warmup>) -> Self {
        if warmup.is_some() { WarmupState::Active } else { WarmupState::None }
    }

    pub fn is_active(self) -> bool {
        self == WarmupState::Active
    }

    /// After `iteration` completed updates, with `window_error` (percent) the training error of
    /// the mini-batches since the last check: ends the warm-up if the error is low enough or the
    /// cap is reached. Returns true if it ended now.
    pub fn update(&mut self, warmup: &Warmup, iteration: u64, window_error: f64) -> bool {
        if !self.is_active() {
            return false;
        }
        if window_error < warmup.until_train_error_below {
            *self = WarmupState::Done { at: iteration, capped: false };
        } else if iteration >= warmup.max_iterations {
            *self = WarmupState::Done { at: iteration, capped: true };
        }
        !self.is_active()
    }
}

/// Where the policy stands: saved with checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    pub warmup: WarmupState,
    #[serde(default)]
    pub plateau: PlateauState,
}

/// The rate of every update, from the schedule, the warm-up's and the plateau rule's state.
#[derive(Debug, Clone)]
pub struct LrPolicy {
    schedule: Schedule,
    plateau: Option<Plateau>,
}

impl LrPolicy {
    pub fn new(schedule: Schedule, plateau: Option<Plateau>) -> Self {
        LrPolicy { schedule, plateau }
    }

    pub fn start(&self) -> PolicyState {
        PolicyState {
            warmup: WarmupState::start(self.schedule.warmup.as_ref()),
            plateau: PlateauState::default(),
        }
    }

    /// The rate of the update that follows `iteration` completed updates.
    pub fn lr(&self, iteration: u64, s: &PolicyState) -> f64 {
        self.schedule.lr_at(iteration, s.warmup.is_active(), &s.plateau)
    }

    /// Whether the warm-up wants the training error of the updates since its last check now.
    pub fn warmup_check_due(&self, iteration: u64, s: &PolicyState) -> bool {
        matches!(&self.schedule.warmup, Some(w) if s.warmup.is_active() && iteration.is_multiple_of(w.check_every))
    }

    /// Feeds the warm-up that error; says how it ended if it ended now.
    pub fn warmup_check(&self, iteration: u64, window_error: f64, s: &mut PolicyState) -> Option<String> {
        let w = self.schedule.warmup.as_ref()?;
        if !s.warmup.update(w, iteration, window_error) {
            return None;
        }
        let how = if matches!(s.warmup, WarmupState::Done { capped: true, .. }) {
            format!("capped at {} iterations, training error still {window_error:.1}%", w.max_iterations)
        } else {
            format!("training error {window_error:.1}% < {}%", w.until_train_error_below)
        };
        Some(format!("warm-up ended at iteration {iteration} ({how}); lr back to {}", self.schedule.lr))
    }

    /// Feeds the plateau rule a validation error; says so if the rate is divided now.
    pub fn plateau_check(&self, iteration: u64, val_error: f64, s: &mut PolicyState) -> Option<String> {
        let p = self.plateau.as_ref()?;
        let before = self.lr(iteration, s);
        s.plateau.update(p, val_error).then(|| {
            let after = self.lr(iteration, s);
            format!("validation error plateaued at {val_error:.2}%; lr {before} -> {after} at iteration {iteration}")
        })
    }

    /// Where the warm-up ended, if the run had one and it is over.
    pub fn warmup_ended_at(s: &PolicyState) -> Option<u64> {
        match s.warmup {
            WarmupState::Done { at, .. } => Some(at),
            _ => None,
        }
    }
}
