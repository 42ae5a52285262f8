#include "src/stream/rules.h"

#include "fmt/format.h"
#include "src/common/quote.h"

namespace cistern::stream {

absl::Status ValidateStreamName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(fmt::format(
        "stream name {} must be 1..{} bytes of [A-Za-z0-9._-]", QuoteKey(name), kMaxNameBytes));
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(fmt::format(
          "stream name {} must be 1..{} bytes of [A-Za-z0-9._-]", QuoteKey(name), kMaxNameBytes));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const wire::StreamOptions& o) {
  if (!o.has_lease_timeout_ms() || !o.has_high_watermark_bytes() || !o.has_low_watermark_bytes() ||
      !o.has_max_in_flight_per_producer() || !o.has_max_lease_refs()) {
    return absl::InvalidArgumentError("stream options are incomplete");
  }
  if (o.lease_timeout_ms() == 0 || o.lease_timeout_ms() > kMaxLeaseTimeoutMs) {
    return absl::InvalidArgumentError(
        fmt::format("lease_timeout_ms {} must be 1..{}", o.lease_timeout_ms(), kMaxLeaseTimeoutMs));
  }
  if (o.high_watermark_bytes() > 0 && o.low_watermark_bytes() > o.high_watermark_bytes()) {
    return absl::InvalidArgumentError(
        fmt::format("low_watermark_bytes {} is above high_watermark_bytes {}",
                    o.low_watermark_bytes(), o.high_watermark_bytes()));
  }
  if (o.max_lease_refs() == 0 || o.max_lease_refs() > kMaxLeaseRefsLimit) {
    return absl::InvalidArgumentError(
        fmt::format("max_lease_refs {} must be 1..{}", o.max_lease_refs(), kMaxLeaseRefsLimit));
  }
  return absl::OkStatus();
}

}  // namespace cistern::stream
