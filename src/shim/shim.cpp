// A small C++ shim over libtorch for what tch 0.24 does not expose: memory formats (channels_last)
// and the multi-tensor (_foreach_*) SGD update that torch.optim.SGD runs. Tensors cross the boundary
// as tch's handles (`at::Tensor*`); a returned handle is owned by the caller (tch frees it with
// `delete`). Errors never cross as exceptions: a function returns null or -1 and rr_last_error()
// says why.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <vector>

#include "guard.hpp"

namespace {
using rr::guarded;

at::MemoryFormat memory_format(int channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

std::vector<at::Tensor> list(at::Tensor** ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

// torch.optim.SGD's _fused_sgd: on the first step (no buffers yet) new empty buffers, which the
// kernel fills with the first d_p, as PyTorch passes them.
void fused_sgd(at::Tensor** params, at::Tensor** grads, at::Tensor** bufs, int n, double lr, double momentum,
               double weight_decay) {
  auto p = list(params, n);
  auto g = list(grads, n);
  std::vector<at::Tensor> b;
  bool first = momentum != 0 && bufs[0] == nullptr;
  if (momentum != 0) {
    for (int i = 0; i < n; ++i) {
      if (first) bufs[i] = new at::Tensor(at::empty_like(g[i]));
      b.push_back(*bufs[i]);
    }
  }
  at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, /*dampening=*/0, /*nesterov=*/false, /*maximize=*/false,
                  first);
}
}  // namespace

extern "C" {

const char* rr_last_error() { return rr::last_error().c_str(); }

// t.contiguous(memory_format): a new handle (the same storage if already in that format).
at::Tensor* rr_contiguous(at::Tensor* t, int channels_last) {
  return guarded([&] { return new at::Tensor(t->contiguous(memory_format(channels_last))); },
                 (at::Tensor*)nullptr);
}

// 1 if t is contiguous in that memory format, 0 if not, -1 on error.
int rr_is_contiguous(at::Tensor* t, int channels_last) {
  return guarded([&] { return t->is_contiguous(memory_format(channels_last)) ? 1 : 0; }, -1);
}

// Drops the gradients of n tensors (optimizer.zero_grad(set_to_none=True), PyTorch's default):
// the next backward writes fresh gradients instead of accumulating into zeroed ones.
int rr_clear_grads(at::Tensor** ts, int n) {
  return guarded(
      [&] {
        for (int i = 0; i < n; ++i) ts[i]->mutable_grad().reset();
        return 0;
      },
      -1);
}

// One SGD step over n parameters, the same operations as torch.optim.SGD's multi-tensor path
// (_multi_tensor_sgd in torch/optim/sgd.py, PyTorch 2.11), which its per-tensor path matches op for
// op, with the paper's settings (no dampening, no Nesterov momentum): d_p = grad + wd * param;
// buf = d_p on the first step, else buf = momentum * buf + d_p; param -= lr * buf.
// bufs[i] == nullptr means "no momentum buffer yet": a new handle is stored there.
// Returns 0, or -1 on error. Runs without recording autograd history.
//
// fused != 0: torch.optim.SGD(fused=True)'s kernel instead (at::_fused_sgd_, one pass over each
// tensor: weight decay, momentum and update together), where every momentum buffer exists or none
// does (PyTorch's own condition: none on the first step).
int rr_sgd_step(at::Tensor** params, at::Tensor** grads, at::Tensor** bufs, int n, double lr,
                double momentum, double weight_decay, int fused) {
  return guarded(
      [&] {
        if (n == 0) return 0;
        c10::NoGradGuard no_grad;
        int with_buffers = 0;
        for (int i = 0; i < n; ++i) with_buffers += bufs[i] != nullptr;
        if (fused && (with_buffers == 0 || with_buffers == n)) {
          fused_sgd(params, grads, bufs, n, lr, momentum, weight_decay);
          return 0;
        }
        auto p = list(params, n);
        auto g = list(grads, n);
        if (weight_decay != 0) g = at::_foreach_add(g, p, weight_decay);
        if (momentum != 0) {
          bool all_buffers = true;
          for (int i = 0; i < n; ++i) all_buffers = all_buffers && bufs[i] != nullptr;
          std::vector<at::Tensor> b;
          if (all_buffers) {
            b = list(bufs, n);
            at::_foreach_mul_(b, momentum);
            at::_foreach_add_(b, g, 1.0);
          } else {
            for (int i = 0; i < n; ++i) {
              if (bufs[i] == nullptr) {
                bufs[i] = new at::Tensor(g[i].detach().clone());
              } else {
                bufs[i]->mul_(momentum).add_(g[i], 1.0);
              }
              b.push_back(*bufs[i]);
            }
          }
          g = b;
        }
        at::_foreach_add_(p, g, -lr);
        return 0;
      },
      -1);
}

// torch.optim.SGD(fused=True)'s kernel with the learning rate read from a device tensor (the
// _fused_sgd_.tensor_lr overload), which a captured CUDA graph replays with whatever rate the tensor
// holds. Every momentum buffer must exist (a capture follows warm-up steps). On CUDA `lr` is a
// float32 scalar on the parameters' device (the kernel reads a float*); on the CPU the kernel reads
// it as a double. 0, or -1 on error.
int rr_fused_sgd_tensor_lr(at::Tensor** params, at::Tensor** grads, at::Tensor** bufs, int n, at::Tensor* lr,
                           double momentum, double weight_decay) {
  return guarded(
      [&] {
        if (n == 0) return 0;
        c10::NoGradGuard no_grad;
        std::vector<at::Tensor> b;
        if (momentum != 0) {
          for (int i = 0; i < n; ++i) {
            TORCH_CHECK(bufs[i] != nullptr, "a step with a device learning rate needs every momentum buffer");
            b.push_back(*bufs[i]);
          }
        }
        at::_fused_sgd_(list(params, n), list(grads, n), b, weight_decay, momentum, *lr, /*dampening=*/0,
                        /*nesterov=*/false, /*maximize=*/false, /*is_first_step=*/false);
        return 0;
      },
      -1);
}

// Enters autocast to bfloat16 on this thread for CPU (cuda = 0) or CUDA (1) tensors, as
// `torch.autocast(device, dtype=torch.bfloat16)` does; *was_enabled and *was_dtype receive the
// state to restore with rr_autocast_leave. 0, or -1 on error.
int rr_autocast_enter_bf16(int cuda, int* was_enabled, int* was_dtype) {
  return guarded(
      [&] {
        auto dev = cuda ? at::kCUDA : at::kCPU;
        *was_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
        *was_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
        at::autocast::set_autocast_dtype(dev, at::kBFloat16);
        at::autocast::set_autocast_enabled(dev, true);
        at::autocast::increment_nesting();
        return 0;
      },
      -1);
}

// Leaves the autocast region rr_autocast_enter_bf16 entered, restoring the state before it and
// dropping the cast weights' cache when the outermost region ends.
int rr_autocast_leave(int cuda, int was_enabled, int was_dtype) {
  return guarded(
      [&] {
        auto dev = cuda ? at::kCUDA : at::kCPU;
        if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
        at::autocast::set_autocast_enabled(dev, was_enabled != 0);
        at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(was_dtype));
        return 0;
      },
      -1);
}

// 1 if bfloat16 autocast is on for CPU tensors on this thread and this CPU has no oneDNN bfloat16
// kernels (torch.ops.mkldnn._is_mkldnn_bf16_supported() is false: x86 without AVX-512), 0 if
// not, -1 on error.
int rr_cpu_bf16_in_fp32() {
  return guarded(
      [&] {
        static const bool native = c10::Dispatcher::singleton()
                                       .findSchemaOrThrow("mkldnn::_is_mkldnn_bf16_supported", "")
                                       .typed<bool()>()
                                       .call();
        bool on = at::autocast::is_autocast_enabled(at::kCPU) &&
                  at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16;
        return (on && !native) ? 1 : 0;
      },
      -1);
}

// conv2d (no bias, no dilation, one group) as bfloat16 autocast defines it, computed by the fp32
// kernels: the operands rounded to bfloat16, their products (exact in fp32) accumulated in fp32,
// the output rounded to bfloat16; in the backward pass the gradients are rounded to bfloat16 at
// the same points (the casts' own backward). What a CPU without bfloat16 kernels otherwise runs
// is libtorch's fallback, about 20 times slower than fp32 on an AVX2 CPU.
at::Tensor* rr_conv2d_bf16_in_fp32(at::Tensor* x, at::Tensor* w, int64_t stride, int64_t padding) {
  return guarded(
      [&] {
        c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
        auto xf = x->to(at::kBFloat16).to(at::kFloat);
        auto wf = w->to(at::kBFloat16).to(at::kFloat);
        return new at::Tensor(
            at::conv2d(xf, wf, {}, {stride, stride}, {padding, padding}).to(at::kBFloat16));
      },
      (at::Tensor*)nullptr);
}

}  // extern "C"
