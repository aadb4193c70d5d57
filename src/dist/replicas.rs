//! Data-parallel replicas of one network, as PyTorch's DDP keeps them: equal at the start (rank 0's
//! variables broadcast), gradients averaged across ranks after every backward pass in flattened
//! buckets of about 25 MB, running statistics averaged when they are read (evaluation,
//! checkpoint), scalars summed for the log.

use crate::shim::dist::{GradReducer, ProcessGroup, Work};
use anyhow::{Result, ensure};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tch::{Device, Tensor, nn::VarStore};

use super::launch::RankEnv;

/// DDP's default bucket size.
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;
/// DDP's first bucket (the last layers' gradients, ready first): small, so that communication
/// starts early in the backward pass.
pub const FIRST_BUCKET_BYTES: usize = 1024 * 1024;

/// When the replicas average their gradients (`--grad-sync during|after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GradSync {
    /// During the backward pass, each bucket as soon as its gradients exist: c10d's `Reducer`,
    /// as PyTorch's DDP does.
    #[value(name = "during")]
    DuringBackward,
    /// After the backward pass, all buckets at once (`Replicas::average_grads`).
    #[value(name = "after")]
    AfterBackward,
}

/// This rank's side of the replicas.
#[derive(Debug)]
pub struct Replicas {
    pub group: ProcessGroup,
    /// This rank's device: where its tensors, and NCCL's, live.
    pub device: Device,
    pub bucket_bytes: usize,
    pub grad_sync: GradSync,
    /// Time spent averaging gradients and statistics (nanoseconds), for the benchmark.
    averaging_ns: AtomicU64,
}

impl Replicas {
    /// Meets the other ranks (NCCL between GPUs, Gloo between CPUs); collectives give up after
    /// `timeout`.
    pub fn connect(env: &RankEnv, device: Device, timeout: Duration) -> Result<Self> {
        let group = ProcessGroup::new(&env.rendezvous(), env.rank, env.world, device, timeout)?;
        Ok(Replicas {
            group,
            device,
            bucket_bytes: BUCKET_BYTES,
            grad_sync: GradSync::DuringBackward,
            averaging_ns: AtomicU64::new(0),
        })
    }

    /// Puts every replica where rank 0 is: the same iteration (they resumed from one checkpoint),
    /// rank 0's variables of `vs` and momentum buffers (`buffers` of `params`, made where a
    /// replica has none yet).
    pub fn start(
        &self,
        vs: &tch::nn::VarStore,
        (params, buffers): (&[Tensor], &mut [Option<Tensor>]),
        iteration: u64,
    ) -> Result<()> {
        let its = self.sum(&[iteration as f64, (iteration as f64).powi(2)])?;
        let w = self.world() as f64;
        ensure!(
            its[0] == w * iteration as f64 && its[1] == w * (iteration as f64).powi(2),
            "rank {} resumes at iteration {iteration} but another rank does not: every rank must see the \
             same run folder (on several nodes, put runs/ on a filesystem they share)",
            self.rank()
        );
        self.broadcast_vars(vs)?;
        if iteration > 0 {
            for (b, p) in buffers.iter_mut().zip(params) {
                b.get_or_insert_with(|| p.zeros_like());
            }
            self.broadcast(&buffers.iter().flatten().map(Tensor::shallow_clone).collect::<Vec<_>>())?;
        }
        Ok(())
    }

    pub fn rank(&self) -> usize {
        self.group.rank
    }

    pub fn world(&self) -> usize {
        self.group.world
    }

    /// Every variable of `vs` (parameters and buffers) becomes rank 0's, as DDP does at
    /// construction; after a resume too, so that all replicas start from one state.
    pub fn broadcast_vars(&self, vs: &VarStore) -> Result<()> {
        self.broadcast(&sorted_vars(vs))
    }

    /// `tensors` (the same shapes and order on every rank) become rank 0's.
    pub fn broadcast(&self, tensors: &[Tensor]) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        tch::no_grad(|| {
            for bucket in buckets(tensors, self.bucket_bytes) {
                let flat = flatten(&bucket);
                self.group.broadcast(&flat, 0)?;
                unflatten(&flat, &bucket, 1.0);
            }
            Ok(())
        })
    }

    /// Averages the gradients of `params` across the ranks (sum, then divide: Gloo has no
    /// average). Every rank must call it with the same parameters in the same order, each with a
    /// gradient (every parameter of these networks gets one).
    pub fn average_grads(&self, params: &[Tensor]) -> Result<()> {
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
        if let Some(i) = grads.iter().position(|g| !g.defined()) {
            anyhow::bail!(
                "rank {}: parameter {i} has no gradient to average (unused in the forward pass)",
                self.rank()
            );
        }
        self.average(&grads)
    }

    /// c10d's reducer over `params` (a network's, in the same order on every rank), with this
    /// replica's bucket size: it averages their gradients during armed backward passes.
    pub fn reducer(&self, params: &[Tensor]) -> Result<GradReducer> {
        self.group.reducer(params, self.bucket_bytes, FIRST_BUCKET_BYTES.min(self.bucket_bytes))
    }

    /// Averages the floating-point buffers of `vs` (BN's running mean and variance) across ranks;
    /// integer ones (BN's batch counts) are equal on every rank and stay.
    pub fn average_buffers(&self, vs: &VarStore) -> Result<()> {
        tch::no_grad(|| self.average(&crate::models::running_stats(vs)))
    }

    /// This rank's share of `n` items split in order over the ranks (sizes differ by one at most):
    /// what it evaluates of a test set.
    pub fn share(&self, n: usize) -> std::ops::Range<usize> {
        share(n, self.rank(), self.world())
    }

    /// `values` summed across ranks (losses and error counts for the log).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_slice(values).to_device(self.device);
        self.group.all_reduce_sum(&t)?;
        Ok(Vec::<f64>::try_from(&t.to_device(Device::Cpu))?)
    }

    /// Every rank's `rows` (2-D, float64, the same number of columns everywhere, any number of
    /// rows), rank 0's first, on every rank: an all-gather made of two sums (the counts, then each
    /// rank's rows written at its offset into zeros), exact since each element is added only to
    /// zeros.
    pub fn gather_rows(&self, rows: &Tensor) -> Result<Tensor> {
        ensure!(rows.dim() == 2 && rows.kind() == tch::Kind::Double, "gather_rows: 2-D float64 rows");
        if self.world() == 1 {
            return Ok(rows.shallow_clone());
        }
        let mut counts = vec![0.0; self.world()];
        counts[self.rank()] = rows.size()[0] as f64;
        let counts = self.sum(&counts)?;
        let offset = counts[..self.rank()].iter().sum::<f64>() as i64;
        let total = counts.iter().sum::<f64>() as i64;
        if total == 0 {
            return Ok(Tensor::zeros([0, rows.size()[1]], (tch::Kind::Double, Device::Cpu)));
        }
        let all = Tensor::zeros([total, rows.size()[1]], (tch::Kind::Double, self.device));
        all.narrow(0, offset, rows.size()[0]).copy_(&rows.to_device(self.device));
        self.group.all_reduce_sum(&all)?;
        Ok(all.to_device(Device::Cpu))
    }

    /// Seconds spent averaging so far (flattening, all-reduces, copying back).
    pub fn averaging_seconds(&self) -> f64 {
        self.averaging_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// `tensors` replaced by their mean over the ranks, bucket by bucket, all buckets in flight at
    /// once.
    fn average(&self, tensors: &[Tensor]) -> Result<()> {
        if self.world() == 1 {
            return Ok(()); // a sum over one rank, divided by 1: nothing changes
        }
        let started = std::time::Instant::now();
        let out = self.average_buckets(tensors);
        self.averaging_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    fn average_buckets(&self, tensors: &[Tensor]) -> Result<()> {
        let scale = 1.0 / self.world() as f64;
        let flats: Vec<(Vec<Tensor>, Tensor)> = buckets(tensors, self.bucket_bytes)
            .into_iter()
            .map(|b| {
                let flat = flatten(&b);
                (b, flat)
            })
            .collect();
        let works: Vec<Work> =
            flats.iter().map(|(_, flat)| self.group.start_all_reduce_sum(flat)).collect::<Result<_>>()?;
        for w in works {
            w.wait()?;
        }
        for (bucket, flat) in &flats {
            unflatten(flat, bucket, scale);
        }
        Ok(())
    }
}

/// `flag` as rank 0 has it, on every replica (alone: `flag`): how replicas follow rank 0's
/// decisions (a run locked, finished, to be evaluated).
pub fn rank0_says(dp: Option<&Replicas>, flag: bool) -> Result<bool> {
    match dp {
        None => Ok(flag),
        Some(dp) => {
            let mine = if dp.rank() == 0 { f64::from(u8::from(flag)) } else { 0.0 };
            Ok(dp.sum(&[mine])?[0] > 0.0)
        }
    }
}

/// `r` where every replica's is `Ok`; otherwise an error on every replica (its own, or one saying
/// that another rank failed), so that no replica waits in a collective a failed one never reaches.
pub fn all_ok<T>(dp: Option<&Replicas>, r: Result<T>) -> Result<T> {
    let Some(dp) = dp else { return r };
    let failed = dp.sum(&[f64::from(u8::from(r.is_err()))])?[0];
    match r {
        Ok(_) if failed > 0.0 => {
            anyhow::bail!("rank {}: {failed} other rank(s) failed (their messages say why)", dp.rank())
        }
        r => r,
    }
}

/// A stop requested by a signal, to this process or (asked of every replica together) to any
/// replica: torchrun forwards a signal to every worker, not at the same instant.
pub fn stop_requested(dp: Option<&Replicas>) -> Result<Option<&'static str>> {
    let local = crate::interrupt::requested();
    let Some(dp) = dp else { return Ok(local) };
    let any = dp.sum(&[f64::from(u8::from(local.is_some()))])?[0] > 0.0;
    Ok(any.then(|| local.unwrap_or("a signal to another replica")))
}

/// Items `share(n, rank, world)` of `n` split in order over the ranks (sizes differ by one at
/// most).
pub fn share(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    n * rank / world..n * (rank + 1) / world
}

/// The variables of `vs` in name order: the same order on every rank.
fn sorted_vars(vs: &VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}

/// `tensors` in order, cut into runs of one dtype and device of at most `bytes` each (a tensor
/// larger than that is a bucket alone).
fn buckets(tensors: &[Tensor], bytes: usize) -> Vec<Vec<Tensor>> {
    let mut out: Vec<Vec<Tensor>> = Vec::new();
    let mut size = 0;
    for t in tensors {
        let b = t.numel() * t.kind().elt_size_in_bytes();
        let same = out
            .last()
            .and_then(|l| l.first())
            .is_some_and(|f| f.kind() == t.kind() && f.device() == t.device());
        if !same || size + b > bytes {
            out.push(Vec::new());
            size = 0;
        }
        out.last_mut().expect("a bucket was just pushed").push(t.shallow_clone());
        size += b;
    }
    out
}

/// One contiguous 1-d tensor holding `bucket`'s values in order (each in its logical order, whatever
/// its memory format).
fn flatten(bucket: &[Tensor]) -> Tensor {
    let parts: Vec<Tensor> = bucket.iter().map(|t| t.detach().reshape([-1])).collect();
    Tensor::cat(&parts, 0)
}

/// Copies `flat`'s values, times `scale`, back into `bucket`'s tensors.
fn unflatten(flat: &Tensor, bucket: &[Tensor], scale: f64) {
    let mut offset = 0;
    for t in bucket {
        let n = t.numel() as i64;
        let part = flat.narrow(0, offset, n).view(t.size().as_slice());
        let mut target = t.shallow_clone();
        if scale == 1.0 {
            target.copy_(&part)
        } else {
            target.copy_(&(part * scale))
        }
        offset += n;
    }
    debug_assert_eq!(offset, flat.numel() as i64);
}

/// Whether a world of `world` ranks can split a global batch of `batch` images evenly.
pub fn check_batch(batch: usize, world: usize) -> Result<usize> {
    ensure!(
        batch.is_multiple_of(world),
        "the global batch ({batch} images, [train] batch_size) must divide evenly over the {world} ranks: \
         choose a world size that divides it, or another batch size"
    );
    Ok(batch / world)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn buckets_split_by_size_and_dtype_and_keep_the_order() {
        let f = |n: i64| Tensor::zeros([n], (Kind::Float, Device::Cpu));
        let ts = vec![f(10), f(10), f(30), Tensor::zeros([2], (Kind::Int64, Device::Cpu)), f(1), f(100)];
        let sizes: Vec<Vec<i64>> =
            buckets(&ts, 100 * 4 - 4).iter().map(|b| b.iter().map(|t| t.numel() as i64).collect()).collect();
        // 10+10+30 floats fit in 396 bytes; the int64s start a bucket; a 100-float tensor is alone.
        assert_eq!(sizes, vec![vec![10, 10, 30], vec![2], vec![1], vec![100]]);
    }

    #[test]
    fn flatten_then_unflatten_is_the_identity_in_any_memory_format() {
        let a = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let cl = crate::shim::contiguous(&a, crate::shim::MemoryFormat::ChannelsLast).unwrap();
        let b = Tensor::randn([7], (Kind::Float, Device::Cpu));
        let bucket = vec![cl.copy(), b.copy()];
        let flat = flatten(&bucket);
        assert_eq!(flat.size(), [127]);
        let out = vec![cl.zeros_like(), b.zeros_like()];
        unflatten(&flat, &out, 2.0);
        assert!(
            out[0].allclose(&(&a * 2.0), 0.0, 0.0, false) && out[1].allclose(&(&b * 2.0), 0.0, 0.0, false)
        );
    }

    #[test]
    fn a_global_batch_must_divide_over_the_ranks() {
        assert_eq!(check_batch(128, 2).unwrap(), 64);
        let err = check_batch(128, 3).unwrap_err().to_string();
        assert!(err.contains("128 images") && err.contains("3 ranks"), "{err}");
    }
}
