//! Safe wrappers over src/shim/shim.cpp: libtorch calls that tch 0.24 does not expose.

pub mod dist;
pub mod graph;
pub mod malloc;

use anyhow::{Result, bail};
use std::ffi::{CStr, c_char, c_double, c_int};
use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn rr_last_error() -> *const c_char;
    fn rr_contiguous(t: *mut C_tensor, channels_last: c_int) -> *mut C_tensor;
    fn rr_is_contiguous(t: *mut C_tensor, channels_last: c_int) -> c_int;
    fn rr_clear_grads(ts: *mut *mut C_tensor, n: c_int) -> c_int;
    fn rr_sgd_step(
        params: *mut *mut C_tensor,
        grads: *mut *mut C_tensor,
        bufs: *mut *mut C_tensor,
        n: c_int,
        lr: c_double,
        momentum: c_double,
        weight_decay: c_double,
        fused: c_int,
    ) -> c_int;
    fn rr_fused_sgd_tensor_lr(
        params: *mut *mut C_tensor,
        grads: *mut *mut C_tensor,
        bufs: *mut *mut C_tensor,
        n: c_int,
        lr: *mut C_tensor,
        momentum: c_double,
        weight_decay: c_double,
    ) -> c_int;
    fn rr_autocast_enter_bf16(cuda: c_int, was_enabled: *mut c_int, was_dtype: *mut c_int) -> c_int;
    fn rr_autocast_leave(cuda: c_int, was_enabled: c_int, was_dtype: c_int) -> c_int;
    fn rr_cpu_bf16_in_fp32() -> c_int;
    fn rr_conv2d_bf16_in_fp32(x: *mut C_tensor, w: *mut C_tensor, stride: i64, padding: i64)
    -> *mut C_tensor;
}

fn last_error(what: &str) -> anyhow::Error {
    // SAFETY: rr_last_error returns a NUL-terminated thread-local string that lives until the next
    // shim call on this thread; it is copied at once.
    let msg = unsafe { CStr::from_ptr(rr_last_error()) }.to_string_lossy().into_owned();
    anyhow::anyhow!("{what}: {msg}")
}

/// How a 4-d tensor's elements are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// NCHW, PyTorch's default.
    Contiguous,
    /// NHWC strides with NCHW sizes; oneDNN's and cuDNN's preferred layout for convolutions.
    ChannelsLast,
}

impl std::str::FromStr for MemoryFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "contiguous" | "nchw" => Ok(MemoryFormat::Contiguous),
            "channels_last" | "nhwc" => Ok(MemoryFormat::ChannelsLast),
            _ => bail!("unknown memory format {s:?}: expected contiguous (nchw) or channels_last (nhwc)"),
        }
    }
}

impl std::fmt::Display for MemoryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemoryFormat::Contiguous => "contiguous",
            MemoryFormat::ChannelsLast => "channels_last",
        })
    }
}

/// `t.contiguous(memory_format=...)`: the same tensor if already laid out so, else a copy.
pub fn contiguous(t: &Tensor, format: MemoryFormat) -> Result<Tensor> {
    let cl = c_int::from(format == MemoryFormat::ChannelsLast);
    // SAFETY: t is a live tch tensor; the returned handle is new and owned by the Tensor we build.
    let out = unsafe { rr_contiguous(t.as_ptr() as *mut C_tensor, cl) };
    if out.is_null() {
        return Err(last_error("contiguous"));
    }
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Whether `t` is laid out in `format`.
pub fn is_contiguous(t: &Tensor, format: MemoryFormat) -> bool {
    let cl = c_int::from(format == MemoryFormat::ChannelsLast);
    // SAFETY: t is a live tch tensor.
    unsafe { rr_is_contiguous(t.as_ptr() as *mut C_tensor, cl) == 1 }
}

/// Lays out every 4-d variable of a var store in `format`, in place (as `module.to(memory_format=)`
/// does): the variables keep their identity, so an optimizer built on them still sees them.
pub fn set_memory_format(vs: &tch::nn::VarStore, format: MemoryFormat) -> Result<()> {
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 && !is_contiguous(&var, format) {
                let converted = contiguous(&var, format)?;
                var.set_data(&converted);
            }
        }
        Ok(())
    })
}

/// Drops the gradients of `tensors`, as `optimizer.zero_grad()` (set_to_none) does in PyTorch.
pub fn clear_grads(tensors: &[Tensor]) -> Result<()> {
    let mut ptrs: Vec<*mut C_tensor> = tensors.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
    // SAFETY: every pointer is a live tch tensor, borrowed for the call.
    if unsafe { rr_clear_grads(ptrs.as_mut_ptr(), ptrs.len() as c_int) } != 0 {
        return Err(last_error("clear grads"));
    }
    Ok(())
}

/// Hyper-parameters of [`sgd_step`], torch.optim.SGD's as the paper uses it (no dampening, no
/// Nesterov momentum).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// torch.optim.SGD(fused=True)'s kernel (`_fused_sgd_`) instead of the multi-tensor path.
    pub fused: bool,
}

/// One SGD update of `params` with their `.grad()`s, the same operations as torch.optim.SGD.
/// `buffers[i]` is parameter i's momentum buffer; `None` before the first step, set by it.
/// Parameters without a gradient are skipped, as torch.optim.SGD skips them.
pub fn sgd_step(params: &[Tensor], buffers: &mut [Option<Tensor>], h: SgdParams) -> Result<()> {
    assert_eq!(params.len(), buffers.len(), "one momentum buffer slot per parameter");
    let mut p_ptrs = Vec::with_capacity(params.len());
    let mut g_ptrs = Vec::with_capacity(params.len());
    let mut b_ptrs = Vec::with_capacity(params.len());
    let mut grads = Vec::with_capacity(params.len()); // keeps the grad handles alive
    let mut slots = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let g = p.grad();
        if !g.defined() {
            continue;
        }
        p_ptrs.push(p.as_ptr() as *mut C_tensor);
        g_ptrs.push(g.as_ptr() as *mut C_tensor);
        grads.push(g);
        b_ptrs.push(buffers[i].as_ref().map_or(std::ptr::null_mut(), |b| b.as_ptr() as *mut C_tensor));
        slots.push(i);
    }
    // SAFETY: every pointer is a live tch tensor for the duration of the call (params and buffers
    // are borrowed, grads held above); new buffer handles are taken over below, exactly once.
    let rc = unsafe {
        rr_sgd_step(
            p_ptrs.as_mut_ptr(),
            g_ptrs.as_mut_ptr(),
            b_ptrs.as_mut_ptr(),
            p_ptrs.len() as c_int,
            h.lr,
            h.momentum,
            h.weight_decay,
            c_int::from(h.fused),
        )
    };
    // New buffers, if any, were written into b_ptrs even if a later operation failed.
    for (k, &i) in slots.iter().enumerate() {
        if buffers[i].is_none() && !b_ptrs[k].is_null() {
            buffers[i] = Some(unsafe { Tensor::from_ptr(b_ptrs[k]) });
        }
    }
    if rc != 0 {
        return Err(last_error("sgd step"));
    }
    drop(grads);
    Ok(())
}

/// torch.optim.SGD(fused=True)'s update with the learning rate read from `lr`, a scalar tensor on
/// the parameters' device (float32 on CUDA, as its kernel reads it; float64 on the CPU, whose
/// kernel reads a double, so that the step equals [`sgd_step`]'s fused one bit for bit): the
/// operation a captured CUDA graph replays at any rate. Every parameter needs a gradient and a
/// momentum buffer (with momentum); `h.lr` and `h.fused` are not used.
pub fn fused_sgd_step_lr_tensor(
    params: &[Tensor],
    buffers: &[Option<Tensor>],
    lr: &Tensor,
    h: SgdParams,
) -> Result<()> {
    assert_eq!(params.len(), buffers.len(), "one momentum buffer slot per parameter");
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    if let Some(i) = grads.iter().position(|g| !g.defined()) {
        bail!("sgd step with a device learning rate: parameter {i} has no gradient");
    }
    let ptr = |t: &Tensor| t.as_ptr() as *mut C_tensor;
    let mut p: Vec<_> = params.iter().map(ptr).collect();
    let mut g: Vec<_> = grads.iter().map(ptr).collect();
    let mut b: Vec<_> = buffers.iter().map(|b| b.as_ref().map_or(std::ptr::null_mut(), ptr)).collect();
    // SAFETY: every pointer is a live tch tensor borrowed (or held in `grads`) for the call; the
    // shim creates no buffers here (a missing one is an error).
    let rc = unsafe {
        rr_fused_sgd_tensor_lr(
            p.as_mut_ptr(),
            g.as_mut_ptr(),
            b.as_mut_ptr(),
            p.len() as c_int,
            ptr(lr),
            h.momentum,
            h.weight_decay,
        )
    };
    if rc != 0 {
        return Err(last_error("sgd step with a device learning rate"));
    }
    Ok(())
}

/// A region of bfloat16 autocast on this thread (`torch.autocast(device, dtype=torch.bfloat16)`):
/// while it lives, the ops autocast lists (convolutions, matrix products) run in bfloat16 on
/// bfloat16 copies of their fp32 inputs and weights, and the precision-sensitive ones (softmax,
/// losses) in fp32; the weights themselves stay fp32. Dropping it restores the state before it.
#[must_use = "autocast lasts as long as the guard"]
pub struct Autocast {
    cuda: c_int,
    was: (c_int, c_int),
}

impl Autocast {
    /// Enters bfloat16 autocast for tensors on `device`'s type (CPU or CUDA).
    pub fn bf16(device: tch::Device) -> Result<Self> {
        let cuda = c_int::from(device.is_cuda());
        let (mut enabled, mut dtype) = (0, 0);
        // SAFETY: plain values and two out-pointers to locals.
        if unsafe { rr_autocast_enter_bf16(cuda, &mut enabled, &mut dtype) } != 0 {
            return Err(last_error("entering bfloat16 autocast"));
        }
        Ok(Autocast { cuda, was: (enabled, dtype) })
    }
}

/// Whether CPU convolutions under bfloat16 autocast go through [`conv2d_bf16_in_fp32`]: autocast
/// to bfloat16 is on for the CPU on this thread and this CPU has no oneDNN bfloat16 kernels (x86
/// without AVX-512, e.g. an AVX2 AMD EPYC), where libtorch's fallback convolution is ~20x slower
/// than fp32.
pub fn cpu_bf16_in_fp32() -> bool {
    // SAFETY: no arguments; reads thread-local and process-wide state.
    unsafe { rr_cpu_bf16_in_fp32() == 1 }
}

/// A bias-free, undilated, ungrouped conv2d as bfloat16 autocast defines it (operands rounded to
/// bfloat16, products accumulated in fp32, output bfloat16; gradients rounded to bfloat16 at the
/// same points), computed by the fp32 kernels. The arithmetic of oneDNN's bfloat16 convolution
/// (fp32 accumulation) but for the order of the sums.
pub fn conv2d_bf16_in_fp32(x: &Tensor, w: &Tensor, stride: i64, padding: i64) -> Result<Tensor> {
    // SAFETY: live tch tensors; the returned handle is new and owned by the Tensor we build.
    let out = unsafe {
        rr_conv2d_bf16_in_fp32(x.as_ptr() as *mut C_tensor, w.as_ptr() as *mut C_tensor, stride, padding)
    };
    if out.is_null() {
        return Err(last_error("bfloat16 conv2d in fp32"));
    }
    Ok(unsafe { Tensor::from_ptr(out) })
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: plain values; restores what bf16() saw. It cannot fail for a state it read.
        unsafe { rr_autocast_leave(self.cuda, self.was.0, self.was.1) };
    }
}
