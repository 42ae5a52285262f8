#include "src/daemon/prefault.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "src/common/errno_status.h"
#include "src/common/fmt_absl.h"
#include "src/common/units.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace cistern::daemon {

Prefaulter::Prefaulter(std::vector<PrefaultRegion> regions, uint64_t chunk)
    : regions_(std::move(regions)), chunk_(chunk == 0 ? 64ull << 20 : chunk) {
  thread_ = std::thread([this] { Run(); });
}

Prefaulter::~Prefaulter() { Stop(); }

void Prefaulter::Stop() {
  stop_.store(true, std::memory_order_relaxed);
  Wait();
}

void Prefaulter::Wait() {
  if (thread_.joinable()) thread_.join();
}

absl::Status Prefaulter::status() const {
  MutexLock l(&mu_);
  return status_;
}

absl::Status Prefaulter::Populate(const PrefaultRegion& r, uint64_t offset, uint64_t length) {
  if (!use_fallocate_) {
    if (::madvise(r.base + offset, length, MADV_POPULATE_WRITE) == 0) return absl::OkStatus();
    if (errno == EFAULT) {  // what a write would have got as SIGBUS: no room
      return absl::ResourceExhaustedError(fmt::format(
          "pre-faulting tier '{}' stopped at byte {}: its filesystem has no room", r.name, offset));
    }
    if (errno != EINVAL) {
      return ErrnoStatus(errno, fmt::format("pre-faulting tier '{}' at byte {}", r.name, offset));
    }
    use_fallocate_ = true;  // a kernel before 5.14
    spdlog::info("pre-fault: MADV_POPULATE_WRITE is not supported here; using fallocate");
  }
  // Allocates the file's pages without changing a byte (KEEP_SIZE: never
  // grows the file).
  if (::fallocate(r.fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0) {
    return ErrnoStatus(errno, fmt::format("pre-faulting tier '{}' at byte {}", r.name, offset));
  }
  return absl::OkStatus();
}

void Prefaulter::Run() {
  absl::Status result;
  for (const PrefaultRegion& r : regions_) {
    const auto start = std::chrono::steady_clock::now();
    uint64_t at = 0;
    while (at < r.size && !stop_.load(std::memory_order_relaxed)) {
      const uint64_t n = std::min(chunk_, r.size - at);
      if (absl::Status s = Populate(r, at, n); !s.ok()) {
        result = absl::ResourceExhaustedError(fmt::format(
            "{} ({} of {} bytes were pre-faulted; later writes past that point may fail)",
            s.message(), at, r.size));
        break;
      }
      at += n;
      done_.fetch_add(n, std::memory_order_relaxed);
    }
    if (!result.ok() || stop_.load(std::memory_order_relaxed)) break;
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spdlog::info("tier '{}': {} MiB pre-faulted in {:.2f} s ({:.2f} GB/s)", r.name, r.size / kMiB,
                 s, s > 0 ? static_cast<double>(r.size) / s / 1e9 : 0.0);
  }
  if (!result.ok()) spdlog::warn("{}", result.message());
  {
    MutexLock l(&mu_);
    status_ = result;
  }
  finished_.store(true, std::memory_order_release);
}

}  // namespace cistern::daemon
