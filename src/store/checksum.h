// XXH3-64 checksums of payloads, and a copy that checksums as it goes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cistern::store {

uint64_t Checksum(const void* data, size_t n);

// Copies `n` bytes from `src` to `dst` (non-overlapping) and returns the XXH3-64
// of them. Works in cache-sized chunks so the hash reads bytes the copy just
// brought into cache instead of reading memory twice.
uint64_t CopyAndChecksum(void* dst, const void* src, size_t n);

// XXH3-64 over a sequence of pieces, equal to Checksum of their concatenation.
class StreamingChecksum {
 public:
  StreamingChecksum();
  ~StreamingChecksum();
  StreamingChecksum(const StreamingChecksum&) = delete;
  StreamingChecksum& operator=(const StreamingChecksum&) = delete;

  void Update(const void* data, size_t n);
  // Copies `n` bytes to `dst` and adds them, chunk by chunk while in cache.
  void CopyAndUpdate(void* dst, const void* src, size_t n);
  uint64_t Digest() const;

 private:
  void* state_;
};

}  // namespace cistern::store
