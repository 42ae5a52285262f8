// Facts about other processes on this host, for deciding whether the holder
// of a lease recorded by an earlier daemon is still the same living process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "src/common/unique_fd.h"

namespace cistern::daemon {

// The process's start time (field 22 of /proc/<pid>/stat: clock ticks after
// boot), or nullopt if no such process exists. With the pid it names one
// process for the host's uptime: a reused pid has another start time.
std::optional<uint64_t> ProcessStartTime(pid_t pid);

// Whether `pid` is still the process that started at `start_time` and has
// not exited (a zombie has).
bool ProcessLives(pid_t pid, uint64_t start_time);

// A pidfd for `pid` (pidfd_open), readable once the process exits, if it is
// still the process that started at `start_time`. NotFound otherwise.
absl::StatusOr<UniqueFd> OpenLivingProcess(pid_t pid, uint64_t start_time);

}  // namespace cistern::daemon
