// The rules a stream's name and options obey, apart from the stream itself:
// the daemon checks them at every open, the config loader checks the
// configured stream defaults with them, and the CLI checks a name before it
// asks. Depends on the wire types only (library cistern_stream_rules).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "cistern/stream.pb.h"

namespace cistern::stream {

inline constexpr size_t kMaxNameBytes = 128;
inline constexpr uint64_t kMaxLeaseTimeoutMs = 7ull * 24 * 3600 * 1000;
inline constexpr uint32_t kMaxLeaseRefsLimit = 1 << 20;

// InvalidArgument unless `name` is 1..128 bytes of [A-Za-z0-9._-].
absl::Status ValidateStreamName(std::string_view name);
// InvalidArgument unless every field is set and consistent (low <= high, ...).
absl::Status ValidateOptions(const wire::StreamOptions& o);

}  // namespace cistern::stream
