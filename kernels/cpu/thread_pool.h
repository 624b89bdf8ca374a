// A fork-join ParallelFor for callers without a runtime thread pool (the Python bindings, C++
// tests). ONNX Runtime callers use the session's intra-op pool instead.
//
// The workers persist between calls and sleep on a condition variable: a call pays a wake-up
// rather than thread creation, and each worker keeps its thread_local scratch (short calls,
// S = 128, N = 8, D = 64, ran about 10% faster than with new threads per call). Written here
// rather than taken from OpenMP because torch wheels bring their own libgomp into the process.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <sched.h>
#include <unistd.h>

#include "cpu_attention.h"

namespace fastattn::cpu {

class ForkJoinPool {
 public:
  // A thread that cannot be started (a pids limit in a container) is an error of the call: the
  // workers already started are joined first, so no joinable std::thread is ever destroyed
  // (that would abort the process).
  explicit ForkJoinPool(int threads) {
    try {
      for (int w = 1; w < threads; ++w) workers_.emplace_back([this] { worker_loop(); });
    } catch (const std::system_error& e) {
      stop_and_join();
      throw std::runtime_error("could not start " + std::to_string(threads - 1) + " worker threads (" + e.what() +
                               "); try a smaller num_threads");
    }
  }
  ~ForkJoinPool() { stop_and_join(); }
  ForkJoinPool(const ForkJoinPool&) = delete;
  ForkJoinPool& operator=(const ForkJoinPool&) = delete;

  // fn(0 .. n-1) on the workers and the calling thread; returns when all are done, rethrowing
  // the first exception. false (nothing run) when another call holds the pool.
  bool try_run(int64_t n, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(call_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_ = n;
      next_ = 0;
      error_ = nullptr;
      pending_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void work() {
    for (int64_t i; (i = next_.fetch_add(1)) < n_;) {
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }
  void stop_and_join() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }
  void worker_loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      lock.unlock();
      work();
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex call_mu_;  // one call at a time
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// The process's pool for a thread count. After fork() the child has none of the parent's
// workers: it builds its own (the parent's pool object is left alone, never joined).
inline ForkJoinPool& shared_pool(int threads) {
  static std::mutex mu;
  static pid_t owner = getpid();
  static auto* pools = new std::map<int, std::unique_ptr<ForkJoinPool>>();
  std::lock_guard<std::mutex> lock(mu);
  if (getpid() != owner) {
    pools = new std::map<int, std::unique_ptr<ForkJoinPool>>();  // the parent's: leaked on purpose
    owner = getpid();
  }
  auto& pool = (*pools)[threads];
  if (!pool) pool = std::make_unique<ForkJoinPool>(threads);
  return *pool;
}

// The CPUs this process may run on: its affinity mask, which taskset and container CPU sets
// narrow (hardware_concurrency counts every online CPU of the machine).
inline int default_thread_count() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

inline ParallelFor make_thread_parallel_for(int num_threads) {
  if (num_threads <= 0) num_threads = default_thread_count();
  return [num_threads](int64_t n, const std::function<void(int64_t)>& fn) {
    if (std::min<int64_t>(num_threads, n) <= 1) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    if (shared_pool(num_threads).try_run(n, fn)) return;
    // Another caller holds the pool (Python threads calling at once): a pool for this call only.
    ForkJoinPool(static_cast<int>(std::min<int64_t>(num_threads, n))).try_run(n, fn);
  };
}

}  // namespace fastattn::cpu
