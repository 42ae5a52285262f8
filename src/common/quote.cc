#include "src/common/quote.h"

#include "absl/strings/escaping.h"
#include "fmt/format.h"

namespace cistern {

std::string QuoteKey(std::string_view key) {
  constexpr size_t kShown = 80;
  std::string shown(key.substr(0, kShown));
  std::string out = "'" + absl::CHexEscape(shown) + "'";
  if (key.size() > kShown) out += fmt::format("... ({} bytes)", key.size());
  return out;
}

}  // namespace cistern
