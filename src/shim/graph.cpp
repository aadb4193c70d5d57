// CUDA graphs for the shim: at::cuda::CUDAGraph (what torch.cuda.graph wraps) and the side stream
// PyTorch warms up and captures on. Compiled with the CUDA runtime's headers where build.rs finds
// them beside the torch wheel (RR_HAVE_CUDA); without them the functions exist and fail with a
// message that says so. Only libtorch's and c10's exported functions are called (streams and events
// through c10's device-generic guards), so nothing links against libcudart directly.
// Errors never cross as exceptions: null or -1, and rr_last_error() says why.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#ifdef RR_HAVE_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <optional>
#include <stdexcept>

#include "guard.hpp"

namespace {
using rr::guarded;

#ifdef RR_HAVE_CUDA
// `to` waits for the work queued on `from` so far (stream.wait_stream in Python).
void wait_stream(const c10::Stream& to, const c10::Stream& from) {
  c10::Event ev(c10::DeviceType::CUDA);
  ev.record(from);
  ev.block(to);
}
#else
[[noreturn]] void no_cuda() {
  throw std::runtime_error(
      "this build has no CUDA graphs (the CUDA runtime headers were not found beside the torch wheel "
      "when the shim was compiled): rebuild against a CUDA build of libtorch");
}
#endif
}  // namespace

// A shim call made of CUDA-only statements: 0, or -1 with the error; without CUDA, always the
// error (the statements are not compiled).
#ifdef RR_HAVE_CUDA
#define RR_CUDA_CALL(...) guarded([&] { __VA_ARGS__; return 0; }, -1)
#else
#define RR_CUDA_CALL(...) guarded([&]() -> int { no_cuda(); }, -1)
#endif

// A graph, the side stream its warm-up and capture run on, and what capture changed.
struct rr_graph {
#ifdef RR_HAVE_CUDA
  at::cuda::CUDAGraph graph;
  c10::Stream side;
  std::optional<c10::StreamGuard> on_side;  // set while on the side stream
  bool autocast_cache = true;               // the autocast cache setting capture turned off
  bool capturing = false;
  explicit rr_graph(c10::Stream s) : side(s) {}
#endif
};

namespace {
#ifdef RR_HAVE_CUDA
void enter_side(rr_graph* g) {
  if (g->on_side) throw std::runtime_error("already on the capture stream");
  auto current = c10::cuda::getCurrentCUDAStream(g->side.device_index()).unwrap();
  wait_stream(g->side, current);
  g->on_side.emplace(g->side);
}

void leave_side(rr_graph* g) {
  if (!g->on_side) return;
  auto original = g->on_side->original_stream();
  g->on_side.reset();
  wait_stream(original, g->side);
}
#endif
}  // namespace

extern "C" {

// A new graph for GPU `device`, with a side stream from libtorch's pool; null on error.
rr_graph* rr_graph_new(int device) {
  return guarded(
      [&]() -> rr_graph* {
#ifdef RR_HAVE_CUDA
        auto s = c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device));
        return new rr_graph(s.unwrap());
#else
        (void)device;
        no_cuda();
#endif
      },
      (rr_graph*)nullptr);
}

void rr_graph_free(rr_graph* g) { delete g; }

// Makes the side stream current (after it waits for the current one): the warm-up steps before a
// capture run there, as torch.cuda.graphs' docs do. rr_graph_leave_side goes back.
int rr_graph_enter_side(rr_graph* g) { return RR_CUDA_CALL(enter_side(g)); }

// Back to the stream current before rr_graph_enter_side, which then waits for the side stream.
int rr_graph_leave_side(rr_graph* g) { return RR_CUDA_CALL(leave_side(g)); }

// Starts capturing this thread's work on the side stream, after the device is idle (as
// torch.cuda.graph does), with autocast's cache of cast weights off (a cached cast made during
// capture would be memory of the graph's pool; make_graphed_callables requires it off too).
int rr_graph_capture_begin(rr_graph* g) {
  return RR_CUDA_CALL({
    enter_side(g);  // also makes the graph's GPU the current device
    c10::cuda::device_synchronize();
    g->autocast_cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    g->capturing = true;
    try {
      g->graph.capture_begin();
    } catch (...) {
      g->capturing = false;
      at::autocast::set_autocast_cache_enabled(g->autocast_cache);
      leave_side(g);
      throw;
    }
  });
}

// Ends the capture and instantiates the graph; on error (an operation that cannot be captured) the
// capture is over all the same, and the state before rr_graph_capture_begin restored.
int rr_graph_capture_end(rr_graph* g) {
  return RR_CUDA_CALL({
    if (!g->capturing) throw std::runtime_error("no capture in progress");
    g->capturing = false;
    try {
      g->graph.capture_end();
    } catch (...) {
      at::autocast::set_autocast_cache_enabled(g->autocast_cache);
      leave_side(g);
      throw;
    }
    at::autocast::set_autocast_cache_enabled(g->autocast_cache);
    leave_side(g);
  });
}

// Abandons a capture that failed part-way (what torch.cuda.graph's __exit__ does when its body
// raised): ends it, ignoring the error that ending an invalidated capture reports. 0.
int rr_graph_capture_abort(rr_graph* g) {
#ifdef RR_HAVE_CUDA
  if (g->capturing) {
    g->capturing = false;
    try {
      g->graph.capture_end();
    } catch (...) {
    }
    at::autocast::set_autocast_cache_enabled(g->autocast_cache);
  }
  try {
    leave_side(g);
  } catch (...) {
  }
#else
  (void)g;
#endif
  return 0;
}

// Launches the captured work on the current stream of the graph's GPU (made the current device for
// the call: a worker may train on a GPU other than the current one).
int rr_graph_replay(rr_graph* g) {
  return RR_CUDA_CALL({
    c10::DeviceGuard on_device(g->side.device());
    g->graph.replay();
  });
}

// 1 if this build can capture CUDA graphs, else 0.
int rr_graph_supported() {
#ifdef RR_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

}  // extern "C"
