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

}  // namespace cistern::store
