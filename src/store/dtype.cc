#include <array>

#include "include/cistern/object.h"

namespace cistern {
namespace {
constexpr std::array<std::string_view, kMaxDType + 1> kNames = {
    "",      "float64", "float32", "float16", "bfloat16", "int64",  "int32",
    "int16", "int8",    "uint8",   "bool",    "uint16",   "uint32", "uint64"};
}  // namespace

std::string_view DTypeName(DType t) {
  auto i = static_cast<size_t>(t);
  return i < kNames.size() && i > 0 ? kNames[i] : std::string_view("unknown");
}

std::optional<DType> DTypeFromName(std::string_view name) {
  for (size_t i = 1; i < kNames.size(); ++i) {
    if (kNames[i] == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}
}  // namespace cistern
