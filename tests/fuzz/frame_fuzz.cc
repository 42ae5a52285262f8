// libFuzzer harness for the frame decoder (src/common/frame.h): the input is a
// byte stream from a client, delivered to a FrameBuffer in reads of varying
// sizes (the first byte seeds them), as the daemon's loop does; every whole
// frame is parsed as a wire::Request, as the server does. Checks that frames
// come out back to back, never longer than the maximum, and that an oversized
// length is an error that names the maximum.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>

#include "cistern/local.pb.h"
#include "src/common/frame.h"

namespace {

constexpr uint64_t kMaxFrame = 4096;

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint8_t seed = data[0];
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  cistern::FrameBuffer buf(kMaxFrame);
  size_t fed = 0, consumed = 0;
  while (true) {
    // Feed the next read: 1 to 256 bytes, sized by the seed.
    if (fed < stream.size()) {
      size_t n = std::min<size_t>(stream.size() - fed, 1 + (seed * 31 + fed) % 256);
      char* tail = buf.WritableTail(n);
      std::memcpy(tail, stream.data() + fed, n);
      buf.Commit(n);
      fed += n;
    }
    for (;;) {
      std::optional<std::string_view> frame;
      absl::Status s = buf.Next(&frame);
      if (!s.ok()) {
        Check(!frame.has_value());
        Check(s.code() == absl::StatusCode::kInvalidArgument);
        Check(s.message().find("4096") != std::string_view::npos);
        return 0;  // the connection is closed
      }
      if (!frame) break;
      Check(frame->size() <= kMaxFrame);
      // The payload is exactly the bytes after its 4-byte length.
      Check(consumed + cistern::kFrameHeaderBytes + frame->size() <= fed);
      Check(std::memcmp(frame->data(), stream.data() + consumed + cistern::kFrameHeaderBytes,
                        frame->size()) == 0);
      consumed += cistern::kFrameHeaderBytes + frame->size();
      cistern::wire::Request req;
      (void)req.ParseFromArray(frame->data(), static_cast<int>(frame->size()));
    }
    Check(buf.buffered() == fed - consumed);
    if (fed == stream.size()) break;
  }
  return 0;
}
