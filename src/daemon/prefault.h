// Pre-faulting arenas in the background (issue 13, "cold puts at memory
// speed"; docs/operations.md, "Arena memory").
//
// A write into a page of a /dev/shm file that nobody touched before costs a
// page allocation, zeroing it, and a page fault: measured here, a memcpy into
// such pages ran at 0.67-0.72 GB/s against 8-10 GB/s warm, so the first
// large put into a fresh daemon ran at page-fault speed. At start the daemon
// hands each arena to a Prefaulter, whose thread walks it in chunks with
// madvise(MADV_POPULATE_WRITE): the pages are allocated and mapped, their
// bytes untouched (populating never writes a byte, so a client writing into
// a block meanwhile loses nothing). Puts do not wait for it: a put into a
// part not reached yet faults as before. On kernels without
// MADV_POPULATE_WRITE (before 5.14) it falls back to fallocate, which
// allocates without mapping.
//
// A filesystem that runs out (a /dev/shm smaller than the arena) stops the
// walk with a status naming the tier and how far it got; nothing else
// changes (a later write past that point may still fail, as without
// pre-faulting).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "src/common/mutex.h"

namespace cistern::daemon {

struct PrefaultRegion {
  std::string name;  // the tier's, for the log
  char* base = nullptr;
  uint64_t size = 0;
  int fd = -1;  // the arena file, for the fallocate fallback
};

class Prefaulter {
 public:
  // Starts the walk over `regions`, in order; `chunk` bytes per call.
  explicit Prefaulter(std::vector<PrefaultRegion> regions, uint64_t chunk = 64ull << 20);
  ~Prefaulter();  // Stop()
  Prefaulter(const Prefaulter&) = delete;
  Prefaulter& operator=(const Prefaulter&) = delete;

  // Ends the walk after the chunk in progress and joins the thread.
  void Stop();
  // Waits until the walk has ended (done, stopped or failed).
  void Wait();

  // Bytes populated so far, over all regions.
  uint64_t done_bytes() const { return done_.load(std::memory_order_relaxed); }
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  // OK, or why the walk stopped early (set once finished).
  absl::Status status() const;

 private:
  void Run();
  absl::Status Populate(const PrefaultRegion& r, uint64_t offset, uint64_t length);

  const std::vector<PrefaultRegion> regions_;
  const uint64_t chunk_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> done_{0};
  std::atomic<bool> finished_{false};
  bool use_fallocate_ = false;  // the walk's thread only
  mutable Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace cistern::daemon
