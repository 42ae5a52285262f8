// Comparing shared secrets (the cluster token).
#pragma once

#include <cstddef>
#include <string_view>

namespace cistern {

// Whether `a` equals `b`, compared without an early exit, so the time taken
// says nothing about how much of a guessed secret was right.
inline bool SameSecret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

}  // namespace cistern
