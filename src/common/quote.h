// A printable rendering of a user-supplied string (a key, a stream name, a
// sample id) for error messages and logs: quoted, C-escaped, the first 80
// bytes shown and the length told beyond that.
#pragma once

#include <string>
#include <string_view>

namespace cistern {

std::string QuoteKey(std::string_view key);

}  // namespace cistern
