#include "src/store/checksum.h"

#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace cistern::store {

uint64_t Checksum(const void* data, size_t n) { return XXH3_64bits(data, n); }

uint64_t CopyAndChecksum(void* dst, const void* src, size_t n) {
  constexpr size_t kChunk = 64 * 1024;
  if (n <= kChunk) {
    std::memcpy(dst, src, n);
    return XXH3_64bits(dst, n);
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  for (size_t done = 0; done < n; done += kChunk) {
    size_t len = n - done < kChunk ? n - done : kChunk;
    // Hash the source chunk first (it comes into cache), then copy from cache.
    XXH3_64bits_update(&state, s + done, len);
    std::memcpy(d + done, s + done, len);
  }
  return XXH3_64bits_digest(&state);
}

}  // namespace cistern::store
