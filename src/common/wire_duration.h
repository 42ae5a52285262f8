// The one place where a wait or timeout a caller gives (a create's wait for
// space, a stream commit's or lease's wait, a client-side deadline) becomes a
// duration that may be added to a clock reading. Callers may ask for any
// length, "forever" included (Python's float('inf'), 10^13 ms on the wire);
// added to a steady_clock time point in nanoseconds, anything past ~292 years
// overflows. So every such wait is clamped to kMaxWait: longer than any real
// job waits, far from overflow. Negative waits are 0 (do not wait).
//
// Configured durations have ranges of their own, checked at load
// (src/daemon/config.cc, src/stream/stream.cc); this header is for the values
// that arrive with each request.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace cistern {

// Seven days.
inline constexpr std::chrono::milliseconds kMaxWait{uint64_t{7} * 24 * 3600 * 1000};

// A caller's wait, clamped to [0, kMaxWait].
inline std::chrono::milliseconds ClampWait(std::chrono::milliseconds wait) {
  return std::clamp(wait, std::chrono::milliseconds(0), kMaxWait);
}

// A caller's wait as the wire's unsigned milliseconds.
inline uint64_t WaitToWireMs(std::chrono::milliseconds wait) {
  return static_cast<uint64_t>(ClampWait(wait).count());
}

// A wait read off the wire (any uint64), clamped to kMaxWait.
inline std::chrono::milliseconds WaitFromWireMs(uint64_t ms) {
  return std::chrono::milliseconds(std::min<uint64_t>(ms, static_cast<uint64_t>(kMaxWait.count())));
}

}  // namespace cistern
