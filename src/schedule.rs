//! The learning-rate schedule of Sec. 4.2: a base rate divided by 10 at fixed iterations, with the
//! warm-up the paper uses for ResNet-110 and 1202 (a small rate until the training error falls below
//! 80%, then back to the base rate and the normal schedule).

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
    /// The warm-up ends here at the latest, whatever the error (a cap the paper does not need).
    pub max_iterations: u64,
}

impl Default for Warmup {
    fn default() -> Self {
        Warmup { lr: 0.01, until_train_error_below: 80.0, check_every: 10, max_iterations: 2000 }
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
    /// The rate of the update that follows `iteration` completed updates.
    pub fn lr_at(&self, iteration: u64, warming_up: bool) -> f64 {
        match &self.warmup {
            Some(w) if warming_up => w.lr,
            _ => {
                let passed = self.milestones.iter().filter(|&&m| iteration >= m).count();
                self.lr * self.decay.powi(passed as i32)
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
