#include "src/store/checksum.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

// The library's dispatching entry points pick the widest vector unit the CPU
// has (SSE2, AVX2, AVX-512) at run time; the hash values are the same.
#include <xxh_x86dispatch.h>

namespace cistern::store {
namespace {
constexpr size_t kCopyChunk = 64 * 1024;
}  // namespace

uint64_t Checksum(const void* data, size_t n) { return XXH3_64bits_dispatch(data, n); }

uint64_t CopyAndChecksum(void* dst, const void* src, size_t n) {
  if (n <= kCopyChunk) {
    std::memcpy(dst, src, n);
    return XXH3_64bits_dispatch(dst, n);
  }
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  for (size_t done = 0; done < n; done += kCopyChunk) {
    size_t len = std::min(kCopyChunk, n - done);
    // Hash the source chunk first (it comes into cache), then copy from cache.
    XXH3_64bits_update_dispatch(state, s + done, len);
    std::memcpy(d + done, s + done, len);
  }
  uint64_t digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return digest;
}

struct PipelinedChecksum::Shared {
  std::atomic<size_t> filled{0};
  uint64_t digest = 0;
  std::thread hasher;
};

PipelinedChecksum::PipelinedChecksum(const void* base, size_t n)
    : base_(static_cast<const char*>(base)), n_(n) {
  if (n < kPipelineBytes) return;
  shared_ = new Shared;
  shared_->hasher = std::thread([base = base_, n, sh = shared_] {
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    size_t done = 0;
    while (done < n) {
      size_t ready = sh->filled.load(std::memory_order_acquire);
      if (ready == done) {
        std::this_thread::yield();
        continue;
      }
      XXH3_64bits_update_dispatch(state, base + done, ready - done);
      done = ready;
    }
    sh->digest = XXH3_64bits_digest(state);
    XXH3_freeState(state);
  });
}

PipelinedChecksum::~PipelinedChecksum() {
  if (shared_) (void)Finish();
}

void PipelinedChecksum::Advance(size_t filled) {
  if (shared_) shared_->filled.store(filled, std::memory_order_release);
}

uint64_t PipelinedChecksum::Finish() {
  if (!shared_) return XXH3_64bits_dispatch(base_, n_);
  shared_->filled.store(n_, std::memory_order_release);
  shared_->hasher.join();
  uint64_t d = shared_->digest;
  delete shared_;
  shared_ = nullptr;
  return d;
}

uint64_t CopyAndChecksumPipelined(void* dst, const void* src, size_t n) {
  if (n < PipelinedChecksum::kPipelineBytes) return CopyAndChecksum(dst, src, n);
  PipelinedChecksum sum(dst, n);
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  for (size_t done = 0; done < n;) {
    size_t len = std::min(PipelinedChecksum::kChunk, n - done);
    std::memcpy(d + done, s + done, len);
    done += len;
    sum.Advance(done);
  }
  return sum.Finish();
}

}  // namespace cistern::store
