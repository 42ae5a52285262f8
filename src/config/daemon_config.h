// cisternd's configuration: loading (strict YAML against proto/cistern/config.proto),
// defaults and semantic validation.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cistern/config.pb.h"

namespace cistern::config {

// The longest duration (7 days, the longest stream lease) and the largest size
// (1 PiB) any config key takes; keys with narrower ranges check those too.
inline constexpr uint64_t kMaxConfigDurationMs = 7ull * 24 * 3600 * 1000;
inline constexpr uint64_t kMaxConfigSizeBytes = 1ull << 50;
inline constexpr uint64_t kMaxHelloTimeoutMs = 3600 * 1000;

// Loads `path` (empty: defaults only), applies each `--set KEY=VALUE`, fills
// defaults and validates. InvalidArgument names the key and the rule broken;
// NotFound / PermissionDenied name an unreadable file.
absl::StatusOr<config::DaemonConfig> LoadDaemonConfig(const std::string& path,
                                                      const std::vector<std::string>& overrides);

// Fills every unset field with its default. Idempotent.
void ApplyDefaults(config::DaemonConfig* cfg);

// Checks a defaulted config: tier names, sizes, watermarks, socket path length,
// limits, the range of every duration and size key, and the stream defaults as
// every stream open checks them. InvalidArgument naming the key path (e.g.
// "tiers[1].low_watermark"). The one check of a config: cisternd runs it at
// start, `cistern config validate` and `cistern daemon start` before it.
absl::Status ValidateDaemonConfig(const config::DaemonConfig& cfg);

// The host_id and cluster block of a defaulted config (part of
// ValidateDaemonConfig): a daemon in a cluster needs cluster.registry,
// cluster_id, token and advertise.
absl::Status ValidateClusterConfig(const config::DaemonConfig& cfg);

}  // namespace cistern::config
