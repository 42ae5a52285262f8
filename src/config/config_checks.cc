#include "src/config/config_checks.h"

#include <arpa/inet.h>

#include <algorithm>

#include "cistern/config_options.pb.h"
#include "fmt/format.h"
#include "src/common/status_macros.h"
#include "src/config/daemon_config.h"

namespace cistern::config {

// Every duration and size field of `msg` (recursively) within the bounds that
// hold for all of them; `path` names `msg` ("" at the top, "tiers[1]").
absl::Status CheckFieldRanges(const google::protobuf::Message& msg, const std::string& path) {
  using google::protobuf::FieldDescriptor;
  const auto* d = msg.GetDescriptor();
  const auto* r = msg.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    std::string at = path.empty() ? f->name() : path + "." + f->name();
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(msg, f); ++j) {
          RETURN_IF_ERROR(
              CheckFieldRanges(r->GetRepeatedMessage(msg, f, j), fmt::format("{}[{}]", at, j)));
        }
      } else if (r->HasField(msg, f)) {
        RETURN_IF_ERROR(CheckFieldRanges(r->GetMessage(msg, f), at));
      }
      continue;
    }
    bool duration = f->options().GetExtension(config::duration_ms);
    bool size = f->options().GetExtension(config::size);
    if ((!duration && !size) || f->is_repeated()) continue;
    uint64_t v = f->cpp_type() == FieldDescriptor::CPPTYPE_UINT64   ? r->GetUInt64(msg, f)
                 : f->cpp_type() == FieldDescriptor::CPPTYPE_UINT32 ? r->GetUInt32(msg, f)
                 : f->cpp_type() == FieldDescriptor::CPPTYPE_INT64
                     ? static_cast<uint64_t>(std::max<int64_t>(0, r->GetInt64(msg, f)))
                     : static_cast<uint64_t>(std::max<int32_t>(0, r->GetInt32(msg, f)));
    if (duration && v > kMaxConfigDurationMs) {
      return absl::InvalidArgumentError(
          fmt::format("{} {} ms is above the longest duration any key takes, {} ms (7 days)", at, v,
                      kMaxConfigDurationMs));
    }
    if (size && v > kMaxConfigSizeBytes) {
      return absl::InvalidArgumentError(
          fmt::format("{} {} bytes is above the largest size any key takes, {} bytes (1 PiB)", at,
                      v, kMaxConfigSizeBytes));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckNumericAddress(std::string_view key, const std::string& value) {
  in6_addr addr6;
  if (::inet_pton(AF_INET, value.c_str(), &addr6) != 1 &&
      ::inet_pton(AF_INET6, value.c_str(), &addr6) != 1) {
    return absl::InvalidArgumentError(
        fmt::format("{} '{}' must be a numeric IPv4 or IPv6 address", key, value));
  }
  return absl::OkStatus();
}

absl::Status CheckHostPort(std::string_view key, const std::string& value) {
  size_t colon = value.rfind(':');
  bool ok = colon != std::string::npos && colon > 0 && colon + 1 < value.size() &&
            value.size() <= 256 && value.find_first_of(" \t\r\n/") == std::string::npos;
  uint64_t port = 0;
  if (ok) {
    for (size_t i = colon + 1; i < value.size(); ++i) {
      if (value[i] < '0' || value[i] > '9' || port > 65535) {
        ok = false;
        break;
      }
      port = port * 10 + static_cast<uint64_t>(value[i] - '0');
    }
  }
  std::string_view host = ok ? std::string_view(value).substr(0, colon) : std::string_view();
  if (ok && host.front() == '[' && host.back() != ']') ok = false;
  if (!ok || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(fmt::format(
        "{} '{}' must be host:port (a name or address, then a port 1..65535; IPv6 in [ ])", key,
        value));
  }
  return absl::OkStatus();
}

absl::Status CheckId(std::string_view key, const std::string& value) {
  bool ok = !value.empty() && value.size() <= 64;
  for (char c : value) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-')) {
      ok = false;
    }
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        fmt::format("{} '{}' must be 1-64 characters of [A-Za-z0-9._-]", key, value));
  }
  return absl::OkStatus();
}

absl::Status CheckTlsPair(std::string_view key, const std::string& cert,
                          const std::string& pem_key) {
  if (cert.empty() != pem_key.empty()) {
    return absl::InvalidArgumentError(fmt::format(
        "{}.cert_file and {}.key_file go together; one is set without the other", key, key));
  }
  return absl::OkStatus();
}

}  // namespace cistern::config
