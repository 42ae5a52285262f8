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

absl::StatusOr<std::unique_ptr<ArenaFile>> ArenaFile::Open(const std::string& path,
                                                           uint64_t size, uint32_t index,
                                                           const std::string& name, bool format,
                                                           bool* formatted) {
  std::unique_ptr<ArenaFile> f(new ArenaFile);
  f->path_ = path;
  f->size_ = size;
  f->fd_.Reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!f->fd_.valid()) return ErrnoStatus(errno, fmt::format("open arena file '{}'", path));
  if (::flock(f->fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          fmt::format("arena file '{}' is in use by another cisternd", path));
    }
    return ErrnoStatus(errno, fmt::format("lock arena file '{}'", path));
  }
  struct stat st {};
  if (::fstat(f->fd_.get(), &st) != 0) return ErrnoStatus(errno, "fstat " + path);
  bool fresh = st.st_size == 0;
  if (!fresh && !format && static_cast<uint64_t>(st.st_size) != size) {
    return absl::FailedPreconditionError(fmt::format(
        "arena file '{}' is {} bytes but tier '{}' is configured for {} bytes; restart with "
        "--format to discard it",
        path, st.st_size, name, size));
  }
  if (fresh || format) {
    if (::ftruncate(f->fd_.get(), 0) != 0 || ::ftruncate(f->fd_.get(), size) != 0) {
      return ErrnoStatus(errno, fmt::format("size arena file '{}' to {} bytes", path, size));
    }
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd_.get(), 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, fmt::format("map arena file '{}'", path));
  f->base_ = static_cast<char*>(p);
  (void)::madvise(p, size, MADV_HUGEPAGE);  // a hint; tmpfs may ignore it
  if (fresh || format) {
    uint64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    absl::Status s = store::Arena::Format(f->base_, size, index, name, now);
    if (!s.ok()) return s;
  }
  *formatted = fresh || format;
  f->share_fd_.Reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!f->share_fd_.valid()) return ErrnoStatus(errno, fmt::format("reopen '{}'", path));
  return f;
}

ArenaFile::~ArenaFile() {
  if (base_) ::munmap(base_, size_);
}

}  // namespace cistern::daemon
