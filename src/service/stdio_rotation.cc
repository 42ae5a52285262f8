#include "src/service/stdio_rotation.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <system_error>

#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cistern::service {

namespace fs = std::filesystem;

std::optional<StdioRotation> StdioRotation::ForDescriptors(std::vector<int> fds, uint64_t max_bytes,
                                                           int max_files) {
  struct stat st {};
  if (fds.empty() || ::fstat(fds[0], &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  std::error_code ec;
  fs::path path = fs::read_symlink(fmt::format("/proc/self/fd/{}", fds[0]), ec);
  if (ec || !path.is_absolute()) return std::nullopt;
  // Only descriptors on the same file move with it.
  std::vector<int> same;
  for (int fd : fds) {
    struct stat other {};
    if (::fstat(fd, &other) == 0 && other.st_dev == st.st_dev && other.st_ino == st.st_ino) {
      same.push_back(fd);
    }
  }
  return StdioRotation(std::move(same), std::move(path), max_bytes, max_files);
}

fs::path StdioRotation::Numbered(int index) const {
  fs::path p = path_;
  return p.replace_filename(
      fmt::format("{}.{}{}", path_.stem().string(), index, path_.extension().string()));
}

bool StdioRotation::Check() {
  struct stat st {};
  if (::fstat(fds_[0], &st) != 0 || static_cast<uint64_t>(st.st_size) < max_bytes_) return false;
  // The file's name never goes missing, for a reader that opens it by name
  // (`cistern daemon logs`, tail -F): the current file is hard-linked to
  // <name>.1 and a fresh file renamed over the name in one step.
  if (max_files_ > 0) {
    std::error_code missing;  // a numbered file not there yet is no error
    fs::remove(Numbered(max_files_), missing);
    for (int i = max_files_ - 1; i >= 1; --i) fs::rename(Numbered(i), Numbered(i + 1), missing);
    std::error_code ec;
    fs::create_hard_link(path_, Numbered(1), ec);
    if (ec) {
      spdlog::warn("cannot rotate {}: {}", path_.string(), ec.message());
      return false;
    }
  }
  // With max_files 0 the current file starts over.
  fs::path next = path_;
  next += ".new";
  int fresh = ::open(next.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fresh < 0) {
    spdlog::warn("cannot reopen {}: {}", path_.string(), std::strerror(errno));
    return false;
  }
  std::error_code renamed;
  fs::rename(next, path_, renamed);
  if (renamed) {
    spdlog::warn("cannot reopen {}: {}", path_.string(), renamed.message());
    ::close(fresh);
    std::error_code ignored;
    fs::remove(next, ignored);
    return false;
  }
  for (int fd : fds_) ::dup2(fresh, fd);
  ::close(fresh);
  return true;
}

}  // namespace cistern::service
