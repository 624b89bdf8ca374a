// A fork-join ParallelFor over std::thread for callers without a runtime thread pool
// (the Python bindings, C++ tests). ONNX Runtime callers use the session's intra-op pool.
#pragma once

#include <atomic>
#include <thread>
#include <vector>

#include "cpu_attention.h"

namespace fastattn::cpu {

inline ParallelFor make_thread_parallel_for(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return [num_threads](int64_t n, const std::function<void(int64_t)>& fn) {
    const int workers = static_cast<int>(std::min<int64_t>(num_threads, n));
    if (workers <= 1) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    std::atomic<int64_t> next{0};
    auto work = [&] {
      for (int64_t i; (i = next.fetch_add(1)) < n;) fn(i);
    };
    std::vector<std::thread> threads;
    threads.reserve(workers - 1);
    for (int w = 1; w < workers; ++w) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
  };
}

}  // namespace fastattn::cpu
