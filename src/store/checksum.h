// Payload checksums.
//
// The checksum of a payload of n bytes is defined segment-wise so that large
// payloads can be hashed on several cores:
//   n <= kChecksumSegment:  XXH3-64(payload)
//   n >  kChecksumSegment:  XXH3-64 of the little-endian uint64 array of
//                           XXH3-64(segment i), over consecutive segments of
//                           kChecksumSegment bytes (the last may be shorter).
// It is part of the arena layout (layout.h); changing it changes the layout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cistern::store {

inline constexpr size_t kChecksumSegment = 1 << 20;

// The checksum of [data, data + n). Large inputs are hashed on up to four
// threads.
uint64_t Checksum(const void* data, size_t n);

// Copies `n` bytes from `src` to `dst` (non-overlapping) and returns
// Checksum(dst, n). Each segment is hashed while its bytes are in cache, and
// large copies are spread over up to four threads with streaming stores, so
// the copy and the hash together run about as fast as a plain memcpy.
uint64_t CopyAndChecksum(void* dst, const void* src, size_t n);

// CopyAndChecksum without the checksum: the same threads and streaming stores.
void Copy(void* dst, const void* src, size_t n);

// Checksum(data, n) built from pieces hashed as they arrive, in any order and
// on any threads (a pull hashes each chunk once it has landed). Each piece
// starts at a multiple of kChecksumSegment and is a whole number of segments
// or reaches n; pieces must not overlap. Finish() once every byte was added,
// after the adding threads are joined.
class ChecksumBuilder {
 public:
  explicit ChecksumBuilder(size_t n);
  // Whether a piece [offset, offset + length) meets the rule above.
  bool Fits(size_t offset, size_t length) const;
  void Add(const void* data, size_t offset, size_t length);  // data: the whole payload
  uint64_t Finish() const;

 private:
  size_t n_;
  std::vector<uint64_t> digests_;  // one per segment, little-endian when n > one segment
  uint64_t whole_ = 0;             // n <= one segment
};

}  // namespace cistern::store
