//! How long a sweep will take on this machine, said before it starts: a few training steps of
//! each of its networks timed on synthetic batches of the run's size, layout and precision, times
//! the iterations each unfinished run has left. Evaluations and checkpoints are left out, so it is
//! a lower bound, close for the CIFAR nets (a test pass every 400 iterations is a few percent).

use super::config::RunConfig;
use super::store::Store;
use crate::models::NetSpec;
use crate::train::Trainer;
use anyhow::Result;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Steps timed per network, after one untimed step (kernels chosen, buffers made); the median is
/// kept. One step alone scattered the quick preset's estimate from 13 to 22 minutes between four
/// invocations on a 2-core VM, five from 14 to 15; the machine's own drift over a minute remains
/// (the full sweep's estimate still spans 8 days 17 h to 12 days 1 h there). Six steps of each of
/// Table 6's ten networks and the quick preset's four take about 45 s there, before a sweep of days.
pub const TIMED_STEPS: usize = 5;
const _: () = assert!(TIMED_STEPS > 0);

/// The sweep's unfinished runs, in training order, and what each has left on this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub runs: Vec<RunLeft>,
}

/// What an unfinished run has left.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLeft {
    /// `resnet20 seed0`.
    pub label: String,
    pub iterations: u64,
    pub seconds: f64,
}

impl Estimate {
    pub fn seconds(&self) -> f64 {
        self.runs.iter().map(|r| r.seconds).sum()
    }

    /// The run `label`'s time, if it is one of the runs.
    pub fn of(&self, label: &str) -> Option<f64> {
        self.runs.iter().find(|r| r.label == label).map(|r| r.seconds)
    }

    /// The seconds the runs after `label` need (all of them if it is not one of the runs).
    pub fn after(&self, label: &str) -> f64 {
        let at = self.runs.iter().position(|r| r.label == label).map_or(0, |i| i + 1);
        self.runs[at..].iter().map(|r| r.seconds).sum()
    }
}

/// The time each of `runs` not finished in `store` has left (from its newest checkpoint), its
/// steps timed on `device`; `None` where a run's network is not a CIFAR-style net (an image
/// folder's ImageNet nets load from disk: their steps alone say little).
pub fn estimate(runs: &[RunConfig], store: Option<&Store>, device: Device) -> Result<Option<Estimate>> {
    let mut timed: Vec<(NetSpec, usize, f64)> = Vec::new();
    let mut out = Vec::new();
    for run in runs {
        let dir = store.map(|s| s.run(run));
        if dir.as_ref().is_some_and(|d| d.is_finished()) {
            continue;
        }
        let NetSpec::Cifar(_) = &run.net else { return Ok(None) };
        let done = match &dir {
            Some(d) => crate::train::checkpoint::list(&d.path)?.pop().map_or(0, |(it, _)| it),
            None => 0,
        };
        let key = |(n, b, _): &&(NetSpec, usize, f64)| *n == run.net && *b == run.train.batch_size;
        let per_step = match timed.iter().find(key) {
            Some((_, _, s)) => *s,
            None => {
                let s = seconds_per_step(run, device)?;
                timed.push((run.net.clone(), run.train.batch_size, s));
                s
            }
        };
        let iterations = run.train.iterations.saturating_sub(done);
        out.push(RunLeft { label: run.label(), iterations, seconds: iterations as f64 * per_step });
    }
    Ok(Some(Estimate { runs: out }))
}

/// Seconds of one training step of `run`'s network at its batch size, layout and precision, on
/// synthetic data. The global random generator is reseeded by each run's trainer before it
/// draws anything, so timing first changes no run's numbers.
fn seconds_per_step(run: &RunConfig, device: Device) -> Result<f64> {
    let NetSpec::Cifar(c) = &run.net else { anyhow::bail!("{}: not a CIFAR-style net", run.label()) };
    let mut t = Trainer::new(&run.net, &run.train, 0, device)?;
    let b = run.train.batch_size as i64;
    let x = Tensor::randn([b, c.in_channels, c.image_size, c.image_size], (Kind::Float, device));
    let y = Tensor::randint(c.num_classes, [b], (Kind::Int64, device));
    let mut step = || -> Result<()> {
        let (loss, _) = t.step(&x, &y, 0.01)?;
        let _ = loss.double_value(&[]); // waits for the device
        Ok(())
    };
    step()?;
    let mut seconds = Vec::with_capacity(TIMED_STEPS);
    for _ in 0..TIMED_STEPS {
        let start = Instant::now();
        step()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(seconds[TIMED_STEPS / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_after_a_run_is_the_runs_after_it() {
        let run = |l: &str, s: f64| RunLeft { label: l.into(), iterations: 1, seconds: s };
        let e = Estimate { runs: vec![run("a", 10.0), run("b", 20.0), run("c", 40.0)] };
        assert_eq!((e.seconds(), e.after("a"), e.after("c"), e.after("x")), (70.0, 60.0, 0.0, 70.0));
        assert_eq!((e.of("b"), e.of("x")), (Some(20.0), None));
    }
}
