//! Safe wrappers over src/shim/graph.cpp: a CUDA graph (`torch.cuda.CUDAGraph`) and the side
//! stream its warm-up and capture run on.

use super::last_error;
use anyhow::{Result, bail};
use std::ffi::c_int;
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

/// A CUDA graph on one GPU: work captured once on a side stream, then replayed with one launch.
/// The tensors the captured work reads and writes keep their memory for the graph's life; replay
/// recomputes them from whatever the inputs hold.
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

    /// Runs `f` on the graph's side stream (after it waits for the current one), as PyTorch warms
    /// up a step before capturing it; the current stream then waits for the side stream.
    pub fn on_side_stream<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        // SAFETY: ptr is live; enter and leave pair up below.
        if unsafe { rr_graph_enter_side(self.ptr.as_ptr()) } != 0 {
            return Err(last_error("entering the capture stream"));
        }
        let out = f();
        // SAFETY: as above.
        if unsafe { rr_graph_leave_side(self.ptr.as_ptr()) } != 0 {
            return Err(last_error("leaving the capture stream"));
        }
        out
    }

    /// Captures the CUDA work `f` issues (nothing runs); on error, from `f` or from the capture
    /// itself, the capture is abandoned and the graph stays empty.
    pub fn capture<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        anyhow::ensure!(!self.captured, "this CUDA graph was captured already");
        let g = self.ptr.as_ptr();
        // SAFETY: ptr is live; begin is followed by end or abort.
        if unsafe { rr_graph_capture_begin(g) } != 0 {
            return Err(last_error("beginning a CUDA graph capture"));
        }
        let out = match f() {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: ends the capture begun above.
                unsafe { rr_graph_capture_abort(g) };
                return Err(e);
            }
        };
        // SAFETY: ends the capture begun above.
        if unsafe { rr_graph_capture_end(g) } != 0 {
            return Err(last_error("ending a CUDA graph capture"));
        }
        self.captured = true;
        Ok(out)
    }

    /// Launches the captured work on the current stream.
    pub fn replay(&mut self) -> Result<()> {
        anyhow::ensure!(self.captured, "replaying a CUDA graph before it was captured");
        // SAFETY: ptr is live and captured.
        if unsafe { rr_graph_replay(self.ptr.as_ptr()) } != 0 {
            return Err(last_error("replaying a CUDA graph"));
        }
        Ok(())
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: ptr came from rr_graph_new and is freed once.
        unsafe { rr_graph_free(self.ptr.as_ptr()) }
    }
}
