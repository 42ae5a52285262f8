// The log of every Cistern server binary (cisternd, cistern-registry): spdlog
// to standard output until the config is read, then to the config's log file
// (rotated at max_bytes into <name>.1.log ... <name>.<max_files>.log) or
// standard output, at the config's level; libprotobuf's and gRPC's own
// messages are routed into it, rate-limited.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "cistern/config.pb.h"

namespace cistern::service {

// The logger before the config is read: standard output, "[<name>]" in each line.
void StartConsoleLog(std::string_view name);

// Switches to the config's log (empty log_file: stay on standard output) and
// level, and routes libprotobuf's messages into it. InvalidArgument naming
// the file when it cannot be opened.
absl::Status ConfigureLog(std::string_view name, const std::string& log_file, uint64_t max_bytes,
                          uint32_t max_files, config::LogLevel level);

}  // namespace cistern::service
