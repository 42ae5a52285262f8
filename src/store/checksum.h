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

// Checksums a region while the caller fills it front to back. For regions of
// at least kPipelineBytes a helper thread hashes each chunk as soon as the
// caller reports it written (Advance), so copying and hashing overlap on two
// cores instead of adding up on one; smaller regions are hashed at Finish,
// while still in cache. Finish returns Checksum(base, n). Not thread-safe;
// one filler.
class PipelinedChecksum {
 public:
  static constexpr size_t kPipelineBytes = 2 << 20;
  static constexpr size_t kChunk = 256 << 10;

  PipelinedChecksum(const void* base, size_t n);
  ~PipelinedChecksum();  // joins the helper if Finish was not called
  PipelinedChecksum(const PipelinedChecksum&) = delete;
  PipelinedChecksum& operator=(const PipelinedChecksum&) = delete;

  // Bytes [0, filled) are final. Monotonic.
  void Advance(size_t filled);
  uint64_t Finish();

 private:
  struct Shared;
  const char* base_;
  size_t n_;
  Shared* shared_ = nullptr;  // only when pipelined
};

// Copies `n` bytes to `dst` and returns Checksum(dst, n), pipelining the hash
// with the copy for large sizes (see PipelinedChecksum).
uint64_t CopyAndChecksumPipelined(void* dst, const void* src, size_t n);


}  // namespace cistern::store
