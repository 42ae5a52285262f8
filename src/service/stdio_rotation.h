// Keeps the file behind the daemon's stdout and stderr bounded. In the
// background, `cistern daemon start` points both at the session's
// logs/stderr.log (opened for append); the daemon's own log is rotated by
// spdlog, but what reaches the raw descriptors (output before logging starts,
// a library writing to stderr, crash reports) grew without bound. Check()
// rotates that file the way the log is rotated: at `max_bytes` it becomes
// stderr.1.log (the newest), older ones shift up to stderr.<max_files>.log
// and the oldest is removed; the descriptors are pointed at a fresh file with
// dup2, so a write racing the rotation lands in one file or the other and a
// crash report is never lost to a closed descriptor.
//
// Thread-safety: Check() is called from one thread (the metrics thread's
// one-second tick); other threads may write to the descriptors meanwhile.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

namespace cistern::service {

class StdioRotation {
 public:
  // Rotation for the regular file that `fds[0]` is open on, or nullopt when
  // it is not one (a terminal, a pipe, /dev/null: nothing to bound). The
  // other descriptors are moved along when they are open on the same file.
  static std::optional<StdioRotation> ForDescriptors(std::vector<int> fds, uint64_t max_bytes,
                                                     int max_files);

  // Rotates when the file has reached max_bytes. True if it rotated.
  bool Check();

  const std::filesystem::path& path() const { return path_; }

 private:
  StdioRotation(std::vector<int> fds, std::filesystem::path path, uint64_t max_bytes, int max_files)
      : fds_(std::move(fds)),
        path_(std::move(path)),
        max_bytes_(max_bytes),
        max_files_(max_files) {}

  std::filesystem::path Numbered(int index) const;

  std::vector<int> fds_;
  std::filesystem::path path_;
  uint64_t max_bytes_;
  int max_files_;
};

}  // namespace cistern::service
