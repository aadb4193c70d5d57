// The distributed part of the shim: libtorch's c10d (the engine under PyTorch's DDP), reached the
// way shim.cpp reaches the rest of libtorch. A TCPStore rendezvous (hosted here or by torchrun's
// agent) and one process group: Gloo for CPU tensors when this file was compiled with Gloo's
// headers (USE_C10D_GLOO, set by build.rs), NCCL for CUDA tensors with NCCL's (USE_C10D_NCCL). Without them the
// functions still exist and fail with a message that says what to install.
// Errors never cross as exceptions: null or -1, and rr_last_error() says why.

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "guard.hpp"

namespace {
using rr::guarded;

enum Backend { kGloo = 1, kNccl = 2 };

c10::intrusive_ptr<c10d::Backend> make_backend(int backend, const c10::intrusive_ptr<c10d::Store>& store,
                                               int rank, int world, int device, std::chrono::milliseconds timeout) {
  if (backend == kGloo) {
#ifdef USE_C10D_GLOO
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
#else
    throw std::runtime_error(
        "this build has no Gloo (its headers were not found when the shim was compiled): install "
        "them (Debian: apt-get install libgloo-dev) and rebuild (the build notices them)");
#endif
  }
  if (backend == kNccl) {
#ifdef USE_C10D_NCCL
    if (device < 0) throw std::runtime_error("an NCCL group needs this rank's GPU");
    // Bound to this rank's GPU before the first collective, as init_process_group(device_id=...)
    // does: otherwise NCCL guesses rank % local GPUs, which is wrong on several nodes.
    at::Device gpu(at::kCUDA, static_cast<c10::DeviceIndex>(device));
    c10::cuda::set_device(gpu.index());
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
    pg->setBoundDeviceId(gpu);
    pg->eagerConnectSingleDevice(gpu);
    return pg;
#else
    throw std::runtime_error(
        "this build has no NCCL (nccl.h and the CUDA runtime headers were not found when the shim was "
        "compiled): see docs/running.md, \"Several GPUs\", and rebuild");
#endif
  }
  throw std::runtime_error("unknown backend " + std::to_string(backend));
}
}  // namespace

// A process group and the store it met its peers through.
struct rr_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  int kind;    // kGloo or kNccl
  int device;  // NCCL: the GPU the group is bound to; else -1
};

// DDP's engine: c10d's Reducer, which all-reduces each bucket of gradients as soon as the
// backward pass has produced all of its gradients (hooks on the parameters' grad accumulators).
struct rr_reducer {
  std::unique_ptr<c10d::Reducer> reducer;
};

// A collective in flight.
struct rr_work {
  c10::intrusive_ptr<c10d::Work> work;
};

extern "C" {

// The backends compiled in: 1 (Gloo) | 2 (NCCL).
int rr_dist_backends() {
  int b = 0;
#ifdef USE_C10D_GLOO
  b |= kGloo;
#endif
#ifdef USE_C10D_NCCL
  b |= kNccl;
#endif
  return b;
}

// Meets the other ranks through the TCPStore at host:port (hosting it when is_server), every key
// under `prefix` (torchrun's agent store keeps each restart's keys apart this way), and creates
// the process group of `world` ranks as `rank` on `backend` (NCCL: bound to GPU `device`; -1 for
// Gloo). Waiting for peers and every collective give up after timeout_ms.
rr_group* rr_group_new(int backend, const char* host, int port, int is_server, const char* prefix, int rank,
                       int world, int device, long long timeout_ms) {
  return guarded(
      [&] {
        auto timeout = std::chrono::milliseconds(timeout_ms);
        c10d::TCPStoreOptions o;
        o.port = static_cast<std::uint16_t>(port);
        o.isServer = is_server != 0;
        o.numWorkers = world;
        o.waitWorkers = false;
        o.timeout = timeout;
        c10::intrusive_ptr<c10d::Store> tcp = c10::make_intrusive<c10d::TCPStore>(host, o);
        auto store = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
        auto pg = make_backend(backend, store, rank, world, device, timeout);
        return new rr_group{store, pg, timeout, backend, device};
      },
      (rr_group*)nullptr);
}

// Frees the group; an NCCL one is shut down first (its communicators finalised, its watchdog
// stopped), as destroy_process_group does: destroyed without it, NCCL 2.28 warns at every exit.
void rr_group_free(rr_group* g) {
  if (g->kind == kNccl) {
    try {
      g->backend->shutdown();
    } catch (...) {
    }
  }
  delete g;
}

// Starts summing t in place across the ranks (every rank's t has the same shape and dtype).
rr_work* rr_group_all_reduce_sum(rr_group* g, at::Tensor* t) {
  return guarded(
      [&] {
        std::vector<at::Tensor> ts{*t};
        c10d::AllreduceOptions o;
        o.reduceOp = c10d::ReduceOp::SUM;
        o.timeout = g->timeout;
        return new rr_work{g->backend->allreduce(ts, o)};
      },
      (rr_work*)nullptr);
}

// Starts copying root's t into every rank's t.
rr_work* rr_group_broadcast(rr_group* g, at::Tensor* t, int root) {
  return guarded(
      [&] {
        std::vector<at::Tensor> ts{*t};
        c10d::BroadcastOptions o;
        o.rootRank = root;
        o.timeout = g->timeout;
        return new rr_work{g->backend->broadcast(ts, o)};
      },
      (rr_work*)nullptr);
}

// Starts a barrier: done when every rank has reached it (NCCL: on the group's GPU).
rr_work* rr_group_barrier(rr_group* g) {
  return guarded(
      [&] {
        c10d::BarrierOptions o;
        o.timeout = g->timeout;
        if (g->device >= 0) o.device_ids = {g->device};
        return new rr_work{g->backend->barrier(o)};
      },
      (rr_work*)nullptr);
}

// A Reducer over the n parameters (every rank passes the same ones in the same order), as DDP
// builds it: buckets of at most bucket_bytes (the first, of the last layers, first_bucket_bytes)
// in reverse parameter order, roughly the order the backward pass produces their gradients;
// gradients averaged (sum / world size) into each parameter's .grad at the end of the backward pass.
rr_reducer* rr_reducer_new(rr_group* g, at::Tensor** params, int n, long long bucket_bytes,
                           long long first_bucket_bytes) {
  return guarded(
      [&] {
        std::vector<at::Tensor> ps;
        for (int i = 0; i < n; ++i) ps.push_back(*params[i]);
        std::vector<size_t> limits{size_t(first_bucket_bytes), size_t(bucket_bytes)};
        auto [buckets, caps] = c10d::compute_bucket_assignment_by_size(ps, limits, std::vector<bool>(n, false));
        std::reverse(buckets.begin(), buckets.end());
        std::vector<int64_t> caps_list(caps.rbegin(), caps.rend());
        auto pg = c10::make_intrusive<c10d::ProcessGroup>(g->store, g->backend->getRank(), g->backend->getSize());
        auto type = g->kind == kNccl ? c10d::ProcessGroup::NCCL : c10d::ProcessGroup::GLOO;
        pg->setBackend(ps.at(0).device().type(), type, g->backend);
        pg->setDefaultBackend(type);
        auto r = std::make_unique<c10d::Reducer>(ps, std::move(buckets), pg, std::vector<bool>(n, false),
                                                 bucket_bytes, /*find_unused_parameters=*/false,
                                                 /*gradient_as_bucket_view=*/false,
                                                 std::unordered_map<size_t, std::string>{}, first_bucket_bytes,
                                                 /*skip_all_reduce_unused_params=*/false,
                                                 /*use_python_reducer=*/false, caps_list);
        return new rr_reducer{std::move(r)};
      },
      (rr_reducer*)nullptr);
}

// Arms the reducer for the next backward pass (a collective the first times: the buckets are
// rebuilt once, in the order the first pass produced the gradients, as DDP's forward does).
int rr_reducer_expect_backward(rr_reducer* r) {
  return guarded(
      [&] {
        r->reducer->rebuild_buckets();
        r->reducer->prepare_for_backward({});
        return 0;
      },
      -1);
}

void rr_reducer_free(rr_reducer* r) { delete r; }

// Waits for w to complete and frees it: 0, or -1 if it failed or outlived timeout_ms. A negative
// timeout_ms waits as long as the backend lets it (NCCL: a wait with a timeout busy-polls the host
// and reports no timeout; its watchdog ends a collective that outlives the group's timeout).
int rr_work_wait(rr_work* w, long long timeout_ms) {
  int rc = guarded(
      [&] {
        bool done = timeout_ms < 0 ? w->work->wait() : w->work->wait(std::chrono::milliseconds(timeout_ms));
        if (!done) throw std::runtime_error("timed out");
        return 0;
      },
      -1);
  delete w;
  return rc;
}

}  // extern "C"
