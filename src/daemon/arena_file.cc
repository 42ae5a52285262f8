#include "src/daemon/arena_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <chrono>

#include "fmt/format.h"
#include "src/common/errno_status.h"
#include "src/common/fmt_absl.h"
#include "src/store/arena.h"

namespace cistern::daemon {

absl::StatusOr<std::unique_ptr<ArenaFile>> ArenaFile::OpenMapped(const std::string& path,
                                                                 uint64_t size, bool reset,
                                                                 const std::string& mismatch,
                                                                 bool* was_reset) {
  std::unique_ptr<ArenaFile> f(new ArenaFile);
  f->path_ = path;
  f->size_ = size;
  f->fd_.Reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!f->fd_.valid()) return ErrnoStatus(errno, fmt::format("open '{}'", path));
  if (::flock(f->fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(fmt::format("'{}' is in use by another cisternd", path));
    }
    return ErrnoStatus(errno, fmt::format("lock '{}'", path));
  }
  struct stat st {};
  if (::fstat(f->fd_.get(), &st) != 0) return ErrnoStatus(errno, "fstat " + path);
  bool fresh = st.st_size == 0;
  bool other_size = !fresh && static_cast<uint64_t>(st.st_size) != size;
  if (other_size && !reset && !mismatch.empty()) {
    return absl::FailedPreconditionError(
        fmt::format("'{}' is {} bytes but {}", path, st.st_size, mismatch));
  }
  *was_reset = fresh || reset || other_size;
  if (*was_reset) {
    if (::ftruncate(f->fd_.get(), 0) != 0 || ::ftruncate(f->fd_.get(), size) != 0) {
      return ErrnoStatus(errno, fmt::format("size '{}' to {} bytes", path, size));
    }
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd_.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, fmt::format("map '{}'", path));
  f->base_ = static_cast<char*>(p);
  f->share_fd_.Reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!f->share_fd_.valid()) return ErrnoStatus(errno, fmt::format("reopen '{}'", path));
  return f;
}

absl::StatusOr<std::unique_ptr<ArenaFile>> ArenaFile::Open(const std::string& path, uint64_t size,
                                                           uint32_t index, const std::string& name,
                                                           bool format, bool* formatted) {
  auto f = OpenMapped(path, size, format,
                      fmt::format("tier '{}' is configured for {} bytes; restart with --format "
                                  "to discard it",
                                  name, size),
                      formatted);
  if (!f.ok()) return f.status();
  (void)::madvise((*f)->base_, size, MADV_HUGEPAGE);  // a hint; tmpfs may ignore it
  if (*formatted) {
    uint64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    absl::Status s = store::Arena::Format((*f)->base_, size, index, name, now);
    if (!s.ok()) return s;
  }
  return f;
}

absl::StatusOr<std::unique_ptr<ArenaFile>> ArenaFile::OpenLeaseTable(const std::string& path,
                                                                     uint64_t size, bool* resized) {
  return OpenMapped(path, size, /*reset=*/false, /*mismatch=*/"", resized);
}

ArenaFile::~ArenaFile() {
  if (base_) ::munmap(base_, size_);
}

}  // namespace cistern::daemon
