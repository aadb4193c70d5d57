//! Safe wrappers over src/shim/dist.cpp: a c10d process group (Gloo for CPU tensors, NCCL for CUDA
//! ones), met through a TCPStore. Every failure names this rank, the world and the operation.

use super::last_error;
use anyhow::{Context, Result, ensure};
use std::ffi::{CString, c_char, c_int, c_longlong};
use std::ptr::NonNull;
use std::time::Duration;
use tch::Tensor;
use torch_sys::C_tensor;

#[repr(C)]
struct RrGroup {
    _private: [u8; 0],
}

#[repr(C)]
struct RrWork {
    _private: [u8; 0],
}

#[repr(C)]
struct RrReducer {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn rr_dist_backends() -> c_int;
    fn rr_group_new(
        backend: c_int,
        host: *const c_char,
        port: c_int,
        is_server: c_int,
        prefix: *const c_char,
        rank: c_int,
        world: c_int,
        device: c_int,
        timeout_ms: c_longlong,
    ) -> *mut RrGroup;
    fn rr_group_free(g: *mut RrGroup);
    fn rr_group_all_reduce_sum(g: *mut RrGroup, t: *mut C_tensor) -> *mut RrWork;
    fn rr_group_broadcast(g: *mut RrGroup, t: *mut C_tensor, root: c_int) -> *mut RrWork;
    fn rr_group_barrier(g: *mut RrGroup) -> *mut RrWork;
    fn rr_work_wait(w: *mut RrWork, timeout_ms: c_longlong) -> c_int;
    fn rr_reducer_new(
        g: *mut RrGroup,
        params: *const *mut C_tensor,
        n: c_int,
        bucket_bytes: c_longlong,
        first_bucket_bytes: c_longlong,
    ) -> *mut RrReducer;
    fn rr_reducer_expect_backward(r: *mut RrReducer) -> c_int;
    fn rr_reducer_free(r: *mut RrReducer);
}

/// A c10d communication backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors (`ProcessGroupGloo`).
    Gloo,
    /// CUDA tensors, one GPU per rank (`ProcessGroupNCCL`).
    Nccl,
}

impl Backend {
    fn code(self) -> c_int {
        match self {
            Backend::Gloo => 1,
            Backend::Nccl => 2,
        }
    }

    /// Whether this build's shim was compiled with this backend (its headers were found).
    pub fn compiled_in(self) -> bool {
        // SAFETY: no arguments, no state.
        unsafe { rr_dist_backends() & self.code() != 0 }
    }

    /// The backend for tensors on `device`: Gloo on the CPU, NCCL on a GPU.
    pub fn for_device(device: tch::Device) -> Backend {
        if device.is_cuda() { Backend::Nccl } else { Backend::Gloo }
    }

    /// How long waiting for one collective may take before it is reported as timed out: the
    /// group's timeout on Gloo; none on NCCL, whose wait with a timeout busy-polls the host (no
    /// overlap with the step) and never reports the timeout, while its watchdog already ends a
    /// collective that outlives the group's timeout, naming it.
    pub fn wait_timeout(self, group_timeout: Duration) -> Option<Duration> {
        match self {
            Backend::Gloo => Some(group_timeout),
            Backend::Nccl => None,
        }
    }

    /// The GPU a group of this backend is bound to before its first collective, for a rank on
    /// `device`: NCCL's is the rank's GPU (set from `LOCAL_RANK`; unbound, NCCL guesses
    /// `rank % local GPUs`, which hangs on several nodes); Gloo's is none.
    pub fn bound_gpu(self, device: tch::Device) -> Result<Option<usize>> {
        match (self, device) {
            (Backend::Gloo, _) => Ok(None),
            (Backend::Nccl, tch::Device::Cuda(i)) => Ok(Some(i)),
            (Backend::Nccl, d) => anyhow::bail!("an NCCL group is for GPUs, and this rank is on {d:?}"),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// Where the ranks meet: a c10d TCPStore at `host:port`, hosted by one process (`host_it`) or by
/// torchrun's agent; every key under `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub host: String,
    pub port: u16,
    /// This process starts the store's server (rank 0 when no torchrun agent hosts it).
    pub host_it: bool,
    /// Keys' prefix: torchrun's `/worker/attempt_<restart>`, so a restarted job never reads the
    /// previous attempt's keys.
    pub prefix: String,
}

/// One rank of a process group. Collectives are called by every rank in the same order.
pub struct ProcessGroup {
    ptr: NonNull<RrGroup>,
    pub backend: Backend,
    pub rank: usize,
    pub world: usize,
    pub timeout: Duration,
}

// SAFETY: c10d's process groups are thread-safe objects (PyTorch calls them from any Python
// thread and from DDP's reducer); here one thread at a time issues a rank's collectives anyway.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup({} rank {} of {})", self.backend, self.rank, self.world)
    }
}

impl ProcessGroup {
    /// Meets the other `world - 1` ranks at `rv` and creates the group as `rank` on `device`
    /// (Gloo on the CPU; NCCL on a GPU, bound to it). Waiting for them and every collective give
    /// up after `timeout`.
    pub fn new(
        rv: &Rendezvous,
        rank: usize,
        world: usize,
        device: tch::Device,
        timeout: Duration,
    ) -> Result<Self> {
        ensure!(rank < world, "rank {rank} is not below the world size {world}");
        let backend = Backend::for_device(device);
        let gpu = backend.bound_gpu(device)?.map_or(-1, |i| i as c_int);
        let host = CString::new(rv.host.as_str()).context("the store's host name has a NUL byte")?;
        let prefix = CString::new(rv.prefix.as_str()).context("the store's prefix has a NUL byte")?;
        let ms = c_longlong::try_from(timeout.as_millis()).unwrap_or(c_longlong::MAX);
        // SAFETY: the strings live across the call; the returned group is owned by Self.
        let ptr = unsafe {
            rr_group_new(
                backend.code(),
                host.as_ptr(),
                c_int::from(rv.port),
                c_int::from(rv.host_it),
                prefix.as_ptr(),
                rank as c_int,
                world as c_int,
                gpu,
                ms,
            )
        };
        let Some(ptr) = NonNull::new(ptr) else {
            return Err(last_error(&format!(
                "rank {rank} of {world}: creating the {backend} process group through the store at {}:{} \
                 (every rank must start within {timeout:?}, and {} must be reachable from here)",
                rv.host, rv.port, rv.host
            )));
        };
        Ok(ProcessGroup { ptr, backend, rank, world, timeout })
    }

    /// Sums `t` in place across the ranks.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        self.start_all_reduce_sum(t)?.wait()
    }

    /// Starts summing `t` in place across the ranks; `t` must not be touched until the returned
    /// work is waited for.
    pub fn start_all_reduce_sum(&self, t: &Tensor) -> Result<Work<'_>> {
        // SAFETY: the group and t are live; t is kept alive by the caller until `wait` (the
        // borrow in Work ties the work to the group; c10d holds its own reference to t).
        let w = unsafe { rr_group_all_reduce_sum(self.ptr.as_ptr(), t.as_ptr() as *mut C_tensor) };
        self.work(w, || format!("all-reduce of {} {:?} values", t.numel(), t.kind()))
    }

    /// Copies rank `root`'s `t` into every rank's `t`.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        // SAFETY: as in start_all_reduce_sum.
        let w = unsafe { rr_group_broadcast(self.ptr.as_ptr(), t.as_ptr() as *mut C_tensor, root as c_int) };
        self.work(w, || format!("broadcast from rank {root} of {} {:?} values", t.numel(), t.kind()))?.wait()
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: the group is live.
        let w = unsafe { rr_group_barrier(self.ptr.as_ptr()) };
        self.work(w, || "barrier".into())?.wait()
    }

    /// c10d's `Reducer` (DDP's engine) over `params`: from then on, a backward pass armed with
    /// [`GradReducer::expect_backward`] all-reduces each bucket of gradients (at most
    /// `bucket_bytes`, the first `first_bucket_bytes`) as soon as the pass has produced it, while
    /// the rest of the pass runs, and leaves every `.grad` the mean over the ranks. Every rank
    /// passes the same parameters in the same order.
    pub fn reducer(
        &self,
        params: &[Tensor],
        bucket_bytes: usize,
        first_bucket_bytes: usize,
    ) -> Result<GradReducer> {
        ensure!(!params.is_empty(), "a reducer over no parameters");
        let ptrs: Vec<*mut C_tensor> = params.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
        let bytes = |b: usize| c_longlong::try_from(b).unwrap_or(c_longlong::MAX);
        // SAFETY: the group and the tensors are live across the call; the reducer keeps its own
        // references to them (and to the group's backend), so it may outlive this borrow.
        let ptr = unsafe {
            rr_reducer_new(
                self.ptr.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len() as c_int,
                bytes(bucket_bytes),
                bytes(first_bucket_bytes),
            )
        };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(GradReducer { ptr, label: self.label() }),
            None => Err(last_error(&format!("{}: creating the gradient reducer", self.label()))),
        }
    }

    /// The shim's wait timeout in milliseconds, -1 for none (see [`Backend::wait_timeout`]).
    fn wait_ms(&self) -> c_longlong {
        self.backend
            .wait_timeout(self.timeout)
            .map_or(-1, |t| c_longlong::try_from(t.as_millis()).unwrap_or(c_longlong::MAX))
    }

    /// `rank r of w (backend)`, for messages.
    fn label(&self) -> String {
        format!("rank {} of {} ({})", self.rank, self.world, self.backend)
    }

    fn work(&self, ptr: *mut RrWork, what: impl Fn() -> String) -> Result<Work<'_>> {
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Work { ptr: Some(ptr), group: self, what: what() }),
            None => Err(self.failed(&what(), "could not start")),
        }
    }

    fn failed(&self, what: &str, how: &str) -> anyhow::Error {
        last_error(&format!(
            "{}: {what} {how} (a peer that died, hung or called another collective; the timeout is {:?})",
            self.label(),
            self.timeout
        ))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: owned, freed once; no Work outlives the group (they borrow it).
        unsafe { rr_group_free(self.ptr.as_ptr()) }
    }
}

/// A collective in flight; [`Work::wait`] for it (dropping it waits too, ignoring its outcome).
pub struct Work<'g> {
    ptr: Option<NonNull<RrWork>>,
    group: &'g ProcessGroup,
    what: String,
}

impl Work<'_> {
    /// Waits until the collective completes on this rank; an error if it failed or outlived the
    /// group's timeout.
    pub fn wait(mut self) -> Result<()> {
        let ptr = self.ptr.take().expect("a work is waited for once");
        let started = std::time::Instant::now();
        // SAFETY: live, owned; rr_work_wait frees it.
        if unsafe { rr_work_wait(ptr.as_ptr(), self.group.wait_ms()) } != 0 {
            let how = format!("failed after {:.1} s", started.elapsed().as_secs_f64());
            return Err(self.group.failed(&self.what, &how));
        }
        Ok(())
    }
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr.take() {
            // SAFETY: live, owned; freed by the call.
            unsafe { rr_work_wait(ptr.as_ptr(), self.group.wait_ms()) };
        }
    }
}

/// c10d's `Reducer` over a network's parameters: gradients averaged across the ranks in buckets
/// during the backward pass (see [`ProcessGroup::reducer`]).
pub struct GradReducer {
    ptr: NonNull<RrReducer>,
    /// `rank r of w (backend)`, for messages.
    pub label: String,
}

// SAFETY: the Reducer is driven from one thread at a time (the training loop's, and libtorch's
// autograd engine during a backward pass that thread started), as DDP drives it.
unsafe impl Send for GradReducer {}
unsafe impl Sync for GradReducer {}

impl std::fmt::Debug for GradReducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GradReducer({})", self.label)
    }
}

impl GradReducer {
    /// Arms the reducer for the next backward pass: it will average the gradients during it.
    /// Every rank calls it before the same backward passes (a backward pass not armed only
    /// accumulates gradients locally, as DDP's `no_sync`).
    pub fn expect_backward(&self) -> Result<()> {
        // SAFETY: live, owned.
        if unsafe { rr_reducer_expect_backward(self.ptr.as_ptr()) } != 0 {
            return Err(last_error(&format!("{}: arming the gradient reducer", self.label)));
        }
        Ok(())
    }
}

impl Drop for GradReducer {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { rr_reducer_free(self.ptr.as_ptr()) }
    }
}
