// Checks shared by the configs of every Cistern process (daemon_config.h,
// registry_config.h). Each returns OK or InvalidArgument naming the key and
// the rule it breaks.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace cistern::config {

// Every duration and size field of `msg` (recursively) within the bounds that
// hold for all of them (kMaxConfigDurationMs, kMaxConfigSizeBytes); `path`
// names `msg` ("" at the top, "tiers[1]").
absl::Status CheckFieldRanges(const google::protobuf::Message& msg, const std::string& path);

// A numeric IPv4 or IPv6 address (what a server binds).
absl::Status CheckNumericAddress(std::string_view key, const std::string& value);

// host:port with a port 1..65535 (what a client dials, what peers are told).
absl::Status CheckHostPort(std::string_view key, const std::string& value);

// An identity: 1-64 characters of [A-Za-z0-9._-] (host_id, cluster_id).
absl::Status CheckId(std::string_view key, const std::string& value);

// A TLS certificate and its key are both set or both empty; `key` names their message.
absl::Status CheckTlsPair(std::string_view key, const std::string& cert,
                          const std::string& pem_key);

}  // namespace cistern::config
