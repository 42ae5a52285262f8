#include "src/common/frame.h"

#include "fmt/format.h"

namespace cistern {

char* FrameBuffer::WritableTail(size_t min_free) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (buf_.size() - end_ < min_free) {
    // Compact first; grow only if compaction is not enough.
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buf_.size() - end_ < min_free) buf_.resize(end_ + min_free);
  }
  return buf_.data() + end_;
}

absl::Status FrameBuffer::Next(std::optional<std::string_view>* frame) {
  frame->reset();
  if (end_ - begin_ < kFrameHeaderBytes) return absl::OkStatus();
  const auto* h = reinterpret_cast<const uint8_t*>(buf_.data() + begin_);
  uint64_t len = uint64_t{h[0]} | uint64_t{h[1]} << 8 | uint64_t{h[2]} << 16 | uint64_t{h[3]} << 24;
  if (len > max_frame_) {
    return absl::InvalidArgumentError(
        fmt::format("frame of {} bytes exceeds the maximum of {} bytes", len, max_frame_));
  }
  if (end_ - begin_ < kFrameHeaderBytes + len) return absl::OkStatus();
  *frame = std::string_view(buf_.data() + begin_ + kFrameHeaderBytes, len);
  begin_ += kFrameHeaderBytes + len;
  return absl::OkStatus();
}

}  // namespace cistern
