// UTF-8 validation for keys and names.
#pragma once

#include <string_view>

namespace cistern {

// True when `s` is well-formed UTF-8: no overlong forms, no surrogates, nothing
// above U+10FFFF. NUL bytes are well-formed; callers that forbid them check.
bool IsValidUtf8(std::string_view s);

}  // namespace cistern
