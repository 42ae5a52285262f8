// cistern-registry's config: loading (strict YAML against
// RegistryServerConfig in proto/cistern/config.proto), defaults and
// validation. Used by cistern-registry and the CLI (`cistern registry start`,
// `cistern config validate --registry`).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cistern/config.pb.h"

namespace cistern::config {

// Loads `path` (empty: defaults only), applies each `--set KEY=VALUE`, fills
// defaults and validates. InvalidArgument names the key and the rule broken;
// NotFound / PermissionDenied name an unreadable file.
absl::StatusOr<RegistryServerConfig> LoadRegistryConfig(const std::string& path,
                                                        const std::vector<std::string>& overrides);

// Fills every unset field with its default. Idempotent.
void ApplyRegistryDefaults(RegistryServerConfig* cfg);

// Checks a defaulted config. InvalidArgument naming the key.
absl::Status ValidateRegistryConfig(const RegistryServerConfig& cfg);

}  // namespace cistern::config
