// Length-prefixed framing for the local protocol: a 4-byte little-endian length,
// then that many payload bytes. FrameBuffer accumulates bytes read from a stream
// socket and hands out whole frames; it is not thread-safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace cistern {

inline constexpr size_t kFrameHeaderBytes = 4;

// Appends the 4-byte length of `payload_size` to `out`.
inline void AppendFrameHeader(std::string* out, uint32_t payload_size) {
  char h[4];
  for (int i = 0; i < 4; ++i) h[i] = static_cast<char>((payload_size >> (8 * i)) & 0xFF);
  out->append(h, 4);
}

class FrameBuffer {
 public:
  explicit FrameBuffer(uint64_t max_frame_bytes) : max_frame_(max_frame_bytes) {}

  // Space to read into: at least `min_free` writable bytes; call Commit(n) after.
  char* WritableTail(size_t min_free);
  void Commit(size_t n) { end_ += n; }

  // The next whole frame's payload, valid until the next call on this buffer;
  // nullopt when more bytes are needed. A frame whose declared length exceeds
  // the maximum is an error (the stream cannot be resynchronised after it).
  absl::Status Next(std::optional<std::string_view>* frame);

  size_t buffered() const { return end_ - begin_; }

 private:
  uint64_t max_frame_;
  std::string buf_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace cistern
