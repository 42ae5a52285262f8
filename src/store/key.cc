#include "src/store/key.h"

#include "fmt/format.h"
#include "src/common/quote.h"
#include "src/common/utf8.h"
#include "src/store/layout.h"

namespace cistern::store {

absl::Status ValidateKey(std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("key is empty");
  if (key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(
        fmt::format("key of {} bytes exceeds the limit of {} bytes", key.size(), kMaxKeyBytes));
  }
  if (key.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(fmt::format("key {} contains a NUL byte", QuoteKey(key)));
  }
  if (!IsValidUtf8(key)) {
    return absl::InvalidArgumentError(fmt::format("key {} is not valid UTF-8", QuoteKey(key)));
  }
  return absl::OkStatus();
}

}  // namespace cistern::store
