// cisternd's configuration: loading (strict YAML against proto/cistern/config.proto),
// defaults and semantic validation.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cistern/config.pb.h"

namespace cistern::daemon {

// Loads `path` (empty: defaults only), applies each `--set KEY=VALUE`, fills
// defaults and validates. InvalidArgument names the key and the rule broken;
// NotFound / PermissionDenied name an unreadable file.
absl::StatusOr<config::DaemonConfig> LoadDaemonConfig(const std::string& path,
                                                      const std::vector<std::string>& overrides);

// Fills every unset field with its default. Idempotent.
void ApplyDefaults(config::DaemonConfig* cfg);

// Checks a defaulted config: tier names, sizes, watermarks, socket path length,
// limits. InvalidArgument naming the key path (e.g. "tiers[1].low_watermark").
absl::Status ValidateDaemonConfig(const config::DaemonConfig& cfg);

}  // namespace cistern::daemon
