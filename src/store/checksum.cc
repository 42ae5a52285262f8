#include "src/store/checksum.h"

#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace cistern::store {

uint64_t Checksum(const void* data, size_t n) { return XXH3_64bits(data, n); }

namespace {
constexpr size_t kChunk = 64 * 1024;

void CopyAndUpdateState(XXH3_state_t* state, void* dst, const void* src, size_t n) {
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  for (size_t done = 0; done < n; done += kChunk) {
    size_t len = n - done < kChunk ? n - done : kChunk;
    // Hash the source chunk first (it comes into cache), then copy from cache.
    XXH3_64bits_update(state, s + done, len);
    std::memcpy(d + done, s + done, len);
  }
}
}  // namespace

uint64_t CopyAndChecksum(void* dst, const void* src, size_t n) {
  if (n <= kChunk) {
    std::memcpy(dst, src, n);
    return XXH3_64bits(dst, n);
  }
  StreamingChecksum sum;
  sum.CopyAndUpdate(dst, src, n);
  return sum.Digest();
}

StreamingChecksum::StreamingChecksum() : state_(XXH3_createState()) {
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_));
}
StreamingChecksum::~StreamingChecksum() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void StreamingChecksum::Update(const void* data, size_t n) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, n);
}
void StreamingChecksum::CopyAndUpdate(void* dst, const void* src, size_t n) {
  CopyAndUpdateState(static_cast<XXH3_state_t*>(state_), dst, src, n);
}
uint64_t StreamingChecksum::Digest() const {
  return XXH3_64bits_digest(static_cast<XXH3_state_t*>(state_));
}

}  // namespace cistern::store
