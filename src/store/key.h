// The rule every object key follows, in the store and in the cluster catalog.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace cistern::store {

// InvalidArgument unless `key` is 1..kMaxKeyBytes (1024) bytes of UTF-8 with
// no NUL; the message names the key (quoted) and the rule broken.
absl::Status ValidateKey(std::string_view key);

}  // namespace cistern::store
