#include "src/daemon/process.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "fmt/format.h"

namespace cistern::daemon {

namespace {

// Field 3 (the state) and field 22 (the start time) of /proc/<pid>/stat.
bool ReadStat(pid_t pid, char* state, uint64_t* start) {
  if (pid <= 0) return false;
  std::string path = fmt::format("/proc/{}/stat", pid);
  FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return false;
  char buf[1024];
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // The command name (field 2) is in parentheses and may hold anything, so
  // count fields from the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ' || p[2] == '\0') return false;
  *state = p[2];
  ++p;
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p + 1, ' ');
    if (p == nullptr) return false;
  }
  char* end = nullptr;
  unsigned long long v = std::strtoull(p + 1, &end, 10);
  if (end == p + 1) return false;
  *start = v;
  return true;
}

}  // namespace

std::optional<uint64_t> ProcessStartTime(pid_t pid) {
  char state;
  uint64_t start;
  if (!ReadStat(pid, &state, &start)) return std::nullopt;
  return start;
}

bool ProcessLives(pid_t pid, uint64_t start_time) {
  char state;
  uint64_t start;
  return ReadStat(pid, &state, &start) && start == start_time && state != 'Z' && state != 'X';
}

absl::StatusOr<UniqueFd> OpenLivingProcess(pid_t pid, uint64_t start_time) {
  if (pid <= 0) return absl::NotFoundError(fmt::format("pid {} names no process", pid));
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!fd.valid()) {
    return absl::NotFoundError(fmt::format("process {} is gone: {}", pid, std::strerror(errno)));
  }
  ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  // Checked after opening: the pidfd now pins this very process.
  auto now = ProcessStartTime(pid);
  if (!now || *now != start_time) {
    return absl::NotFoundError(fmt::format("process {} is gone (its pid was reused)", pid));
  }
  return fd;
}

}  // namespace cistern::daemon
