// A tier's arena file, locked and mapped. The daemon holds an exclusive flock
// on the file for its lifetime so two daemons never share an arena; clients
// get a second, unlocked descriptor of the same file (share_fd) so a client
// that outlives the daemon never holds the lock.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace cistern::daemon {

class ArenaFile {
 public:
  // Opens (creating if absent) and maps `path` as an arena of `size` bytes for
  // tier `index`/`name`. A new file, or any file when `format` is set, is
  // (re)formatted; `*formatted` says which happened. An existing file of another
  // size is FailedPrecondition (never silently reused); a file locked by another
  // process is FailedPrecondition naming it.
  static absl::StatusOr<std::unique_ptr<ArenaFile>> Open(const std::string& path, uint64_t size,
                                                         uint32_t index, const std::string& name,
                                                         bool format, bool* formatted);
  // The shared lease table's file (src/store/shared_lease_table.h), locked
  // and mapped. A new file, or one of another size, is emptied and sized;
  // `*resized` says so (the caller then formats it).
  static absl::StatusOr<std::unique_ptr<ArenaFile>> OpenLeaseTable(const std::string& path,
                                                                   uint64_t size, bool* resized);
  ~ArenaFile();

  char* base() const { return base_; }
  uint64_t size() const { return size_; }
  int share_fd() const { return share_fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  ArenaFile() = default;
  // Opens, locks, sizes (emptying it if new, `reset`, or of another size when
  // `mismatch` is empty; else FailedPrecondition ending with `mismatch`) and
  // maps `path`.
  static absl::StatusOr<std::unique_ptr<ArenaFile>> OpenMapped(const std::string& path,
                                                               uint64_t size, bool reset,
                                                               const std::string& mismatch,
                                                               bool* was_reset);
  std::string path_;
  UniqueFd fd_;        // locked
  UniqueFd share_fd_;  // handed to clients
  char* base_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace cistern::daemon
