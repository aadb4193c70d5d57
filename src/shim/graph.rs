//! Safe wrappers over src/shim/graph.cpp: a CUDA graph (`torch.cuda.CUDAGraph`) and the side
//! stream its warm-up and capture run on.

use super::last_error;
use anyhow::{Result, anyhow, bail};
use std::ffi::c_int;
use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;
use tch::Device;

#[repr(C)]
struct RrGraph {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn rr_graph_supported() -> c_int;
    fn rr_graph_new(device: c_int) -> *mut RrGraph;
    fn rr_graph_free(g: *mut RrGraph);
    fn rr_graph_enter_side(g: *mut RrGraph) -> c_int;
    fn rr_graph_leave_side(g: *mut RrGraph) -> c_int;
    fn rr_graph_capture_begin(g: *mut RrGraph) -> c_int;
    fn rr_graph_capture_end(g: *mut RrGraph) -> c_int;
    fn rr_graph_capture_abort(g: *mut RrGraph) -> c_int;
    fn rr_graph_replay(g: *mut RrGraph) -> c_int;
}

/// Whether this build can capture CUDA graphs (the CUDA runtime's headers were found when the shim
/// was compiled).
pub fn graphs_supported() -> bool {
    // SAFETY: no arguments.
    unsafe { rr_graph_supported() == 1 }
}

/// What capturing a step needs from a CUDA graph: its side stream, the capture's begin and end,
/// abandoning a capture that failed, and replay. [`CudaGraph`] is libtorch's; the tests drive a
/// stand-in on the CPU through the same [`capture`] and [`on_side_stream`].
pub trait Graph {
    /// Makes the graph's side stream current (after it waits for the current one).
    fn enter_side(&mut self) -> Result<()>;
    /// Back to the stream current before [`Graph::enter_side`], which then waits for the side one.
    fn leave_side(&mut self) -> Result<()>;
    /// Starts recording the work issued on the side stream (nothing of it runs).
    fn begin(&mut self) -> Result<()>;
    /// Ends the recording and makes the graph replayable.
    fn end(&mut self) -> Result<()>;
    /// After a capture failed, in the recorded work or in [`Graph::end`]: ends it if it is still
    /// going and restores everything [`Graph::begin`] changed (the allocator's pool, the random
    /// generators' capture state, the current stream). Never fails; the graph is not replayable.
    fn abandon(&mut self);
    /// Launches the recorded work on the current stream.
    fn replay(&mut self) -> Result<()>;
}

/// Runs `f` on `g`'s side stream, as PyTorch warms up a step before capturing it; back on the
/// previous stream afterwards, also when `f` fails or panics.
pub fn on_side_stream<T>(g: &mut dyn Graph, f: impl FnOnce() -> Result<T>) -> Result<T> {
    g.enter_side()?;
    let out = quiet_catch(f);
    let left = g.leave_side();
    match out {
        Ok(v) => left.and(v),
        Err(msg) => Err(anyhow!("an operation failed on the capture's side stream: {msg}")),
    }
}

/// Records the work `f` issues into `g` (nothing runs). Whatever fails, `f` with an error or with
/// a panic (a libtorch operation that cannot be captured fails, and tch panics on it), or the
/// end of the capture, the capture is abandoned ([`Graph::abandon`]) and the error returned, so
/// that the caller can go on without a graph.
pub fn capture<T>(g: &mut dyn Graph, f: impl FnOnce() -> Result<T>) -> Result<T> {
    g.begin().inspect_err(|_| g.abandon())?;
    let out = match quiet_catch(f) {
        Ok(Ok(v)) => g.end().map(|()| v),
        Ok(Err(e)) => Err(e),
        Err(msg) => Err(anyhow!("an operation failed while being captured: {msg}")),
    };
    if out.is_err() {
        g.abandon();
    }
    out
}

thread_local! {
    /// Set while this thread runs work being captured, whose panics [`capture`] reports itself.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into its message, without the panic hook's report on stderr (the
/// capture's fallback says what failed). Other threads' panics are reported as before.
fn quiet_catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(|c| c.get()) {
                previous(info)
            }
        }));
    });
    CATCHING.with(|c| c.set(true));
    let out = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(false));
    out.map_err(|p| match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
        (Some(s), _) => libtorch_message(s),
        (_, Some(s)) => libtorch_message(s),
        _ => "a panic".into(),
    })
}

/// The message of a panic on a libtorch error (tch's `unwrap` of `Torch("<message>\nException
/// raised from ...<C++ frames>")`, escaped): the message alone; other text as it is.
fn libtorch_message(panic: &str) -> String {
    let Some((_, rest)) = panic.split_once("Torch(\"") else { return panic.to_string() };
    let message = rest.split("\\nException raised from").next().unwrap_or(rest);
    message.trim_end_matches("\")").to_string()
}

/// A CUDA graph on one GPU (libtorch's `at::cuda::CUDAGraph`, what `torch.cuda.CUDAGraph`
/// wraps): work captured once on a side stream, then replayed with one launch. The tensors the
/// captured work reads and writes keep their memory for the graph's life; replay recomputes them
/// from whatever the inputs hold.
pub struct CudaGraph {
    ptr: NonNull<RrGraph>,
    captured: bool,
}

impl CudaGraph {
    /// A graph for `device`, which must be a GPU.
    pub fn new(device: Device) -> Result<Self> {
        let Device::Cuda(index) = device else { bail!("CUDA graphs need a CUDA device, not {device:?}") };
        // SAFETY: a plain value; the returned pointer is owned by the CudaGraph.
        let ptr = NonNull::new(unsafe { rr_graph_new(index as c_int) })
            .ok_or_else(|| last_error("creating a CUDA graph"))?;
        Ok(CudaGraph { ptr, captured: false })
    }

    fn call(&mut self, what: &str, f: unsafe extern "C" fn(*mut RrGraph) -> c_int) -> Result<()> {
        // SAFETY: ptr is live; the shim's functions check their own state.
        if unsafe { f(self.ptr.as_ptr()) } != 0 {
            return Err(last_error(what));
        }
        Ok(())
    }
}

impl Graph for CudaGraph {
    fn enter_side(&mut self) -> Result<()> {
        self.call("entering the capture stream", rr_graph_enter_side)
    }

    fn leave_side(&mut self) -> Result<()> {
        self.call("leaving the capture stream", rr_graph_leave_side)
    }

    fn begin(&mut self) -> Result<()> {
        anyhow::ensure!(!self.captured, "this CUDA graph was captured already");
        self.call("beginning a CUDA graph capture", rr_graph_capture_begin)
    }

    fn end(&mut self) -> Result<()> {
        self.call("ending a CUDA graph capture", rr_graph_capture_end)?;
        self.captured = true;
        Ok(())
    }

    fn abandon(&mut self) {
        // SAFETY: ptr is live; abort never fails and tolerates any state.
        unsafe { rr_graph_capture_abort(self.ptr.as_ptr()) };
        self.captured = false;
    }

    fn replay(&mut self) -> Result<()> {
        anyhow::ensure!(self.captured, "replaying a CUDA graph before it was captured");
        self.call("replaying a CUDA graph", rr_graph_replay)
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: ptr came from rr_graph_new and is freed once.
        unsafe { rr_graph_free(self.ptr.as_ptr()) }
    }
}
