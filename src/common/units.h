// Byte units, one definition for every file (a unity build puts several
// files' anonymous namespaces into one translation unit).
#pragma once

#include <cstdint>

namespace cistern {

inline constexpr uint64_t kKiB = uint64_t{1} << 10;
inline constexpr uint64_t kMiB = uint64_t{1} << 20;
inline constexpr uint64_t kGiB = uint64_t{1} << 30;
inline constexpr uint64_t kTiB = uint64_t{1} << 40;

}  // namespace cistern
