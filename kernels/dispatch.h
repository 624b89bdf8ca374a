// The one entry into the kernels: a parameter struct plus a launch context, dispatched to the
// backend of the context's device. Each backend (a folder of kernels/, listed once in
// kernels/CMakeLists.txt) provides a Backend: what it supports, and how it runs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attention_params.h"

namespace fastattn {

// Runs fn(i) for every i in [0, n), possibly concurrently, and returns when all are done.
// ONNX Runtime passes its intra-op thread pool through this; the Python bindings pass their own.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t)>& fn)>;

// How one call is launched: on which device, on which stream, with which host threads.
struct LaunchContext {
  Device device;
  void* stream = nullptr;    // the backend's queue (cudaStream_t, aclrtStream); null on the CPU
  ParallelFor parallel_for;  // host worker threads (the CPU backend's work, host-side steps)
};

struct Backend {
  const char* name;  // "cpu", as in the CMake backend list
  DeviceKind kind;
  // "" when the backend runs these params, else why not. Called at session creation with the
  // sizes known then (unknown sizes are 0, present tensors have a non-null placeholder data
  // pointer) and again before each run.
  std::string (*supports)(const AttentionParams& p);
  // Computes p.out (and present_k / present_v when given) for params that passed check_params
  // and supports. May throw std::exception on a failure of the device.
  void (*run)(const AttentionParams& p, const LaunchContext& ctx);
  // What the backend selected on this machine (vector ISA, architecture), for `doctor`.
  std::string (*describe)();
};

// The backends compiled into this build, in the order of the CMake list.
const std::vector<const Backend*>& backends();
// The backend for a device kind, or null when none is compiled in.
const Backend* backend_for(DeviceKind kind);

// "" when the backend of p.device runs p, else why not (no backend, or its own reason).
std::string supports(const AttentionParams& p);

// Checks p (check_params, supports) and runs it. Returns "" or the broken rule; callers add
// the node or function name.
std::string attention_forward(const AttentionParams& p, const LaunchContext& ctx);

}  // namespace fastattn
