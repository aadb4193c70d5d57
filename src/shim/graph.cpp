// CUDA graphs for the shim: at::cuda::CUDAGraph (what torch.cuda.graph wraps) and the side stream
// PyTorch warms up and captures on. Compiled with the CUDA runtime's headers where build.rs finds
// them beside the torch wheel (RR_HAVE_CUDA); without them the functions exist and fail with a
// message that says so. Only libtorch's and c10's exported functions are called (streams and events
// through c10's device-generic guards), so nothing links against libcudart directly.
// Errors never cross as exceptions: null or -1, and rr_last_error() says why.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#ifdef RR_HAVE_CUDA
#include <ATen/core/CachingHostAllocator.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
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

#ifdef RR_HAVE_CUDA
namespace {
// at::cuda::CUDAGraph, able to undo what a failed capture leaves behind. In libtorch 2.11,
// capture_end throws at cudaStreamEndCapture (a capture invalidated by an operation that cannot be
// captured) before it ends the caching allocator's and the pinned allocator's recording to the
// graph's private pool and before the generators' capture epilogue; the graph's reset() then
// releases nothing (capture_ended_ is false). Left so, the default CUDA generator stays
// "capturing" (the next randn fails with "Offset increment outside graph capture"), the allocator
// keeps a capture filter that points at the freed graph, and the pool leaks.
struct Graph : at::cuda::CUDAGraph {
  // The private pool, ours (not made inside capture_begin), so that it is known however early
  // capture_begin failed.
  c10::MempoolId_t pool = at::cuda::graph_pool_handle();

  // After a capture that did not end well: each step is what capture_end would have done, and
  // each tolerates its part never having been set up (capture_begin failing early). The graph
  // is not used after this. (libtorch's map of graphs being captured keeps a stale entry for
  // this capture's id, which no later capture reads: ids are never reused.)
  void undo_failed_capture() {
    if (capture_ended_) return;  // capture_end got far: the graph's reset() releases the pool
    auto quietly = [](auto f) {
      try {
        f();
      } catch (...) {
      }
    };
    auto dev = capture_dev_ == UNDEFINED_DEVICE ? c10::cuda::current_device() : capture_dev_;
    quietly([&] { c10::cuda::CUDACachingAllocator::endAllocateToPool(dev, pool); });
    quietly([&] { at::getHostAllocator(at::kCUDA)->end_allocate_to_pool(pool); });
    for (auto& entry : captured_generator_states_) entry.first->capturing_ = false;  // the epilogue
    quietly([&] { c10::cuda::CUDACachingAllocator::releasePool(dev, pool); });
    quietly([&] { at::getHostAllocator(at::kCUDA)->release_pool(pool); });
  }
};
}  // namespace
#endif

// A graph, the side stream its warm-up and capture run on, and what capture changed.
struct rr_graph {
#ifdef RR_HAVE_CUDA
  Graph graph;
  c10::Stream side;
  std::optional<c10::StreamGuard> on_side;  // set while on the side stream
  bool autocast_cache = true;               // the autocast cache setting capture turned off
  bool capturing = false;                   // between capture_begin and its end or abort
  bool failed = false;                      // a capture that did not end well, not yet undone
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
// capture would be memory of the graph's pool; make_graphed_callables requires it off too), into
// the graph's own pool. On error, rr_graph_capture_abort undoes what was begun.
int rr_graph_capture_begin(rr_graph* g) {
  return RR_CUDA_CALL({
    enter_side(g);  // also makes the graph's GPU the current device
    c10::cuda::device_synchronize();
    g->autocast_cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    g->capturing = true;
    g->graph.capture_begin(g->graph.pool);
  });
}

// Ends the capture and instantiates the graph. On error (an operation that cannot be captured
// invalidated it) the capture is over, and rr_graph_capture_abort undoes the rest.
int rr_graph_capture_end(rr_graph* g) {
  return RR_CUDA_CALL({
    if (!g->capturing) throw std::runtime_error("no capture in progress");
    g->capturing = false;
    try {
      g->graph.capture_end();
    } catch (...) {
      g->failed = true;
      throw;
    }
    at::autocast::set_autocast_cache_enabled(g->autocast_cache);
    leave_side(g);
  });
}

// Abandons a capture that failed, in the captured work or in rr_graph_capture_end (what
// torch.cuda.graph's __exit__ does when its body raised, and what libtorch's capture_end leaves
// undone when it throws): ends the stream capture if it is still going, restores the allocators'
// pools, the generators, the autocast cache and the current stream. Never fails; 0. The graph is
// not replayable afterwards.
int rr_graph_capture_abort(rr_graph* g) {
#ifdef RR_HAVE_CUDA
  bool begun = g->capturing || g->failed;
  if (g->capturing) {
    g->capturing = false;
    try {
      g->graph.capture_end();  // ends the capture; an invalidated one throws here
    } catch (...) {
    }
  }
  if (begun) {
    g->graph.undo_failed_capture();
    g->failed = false;
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
