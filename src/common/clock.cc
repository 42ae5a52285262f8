#include "src/common/clock.h"

namespace cistern {
namespace {
class SteadyClock : public Clock {
 public:
  TimePoint Now() const override {
    return std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now());
  }
};
}  // namespace

uint64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Clock* Clock::Real() {
  static SteadyClock* clock = new SteadyClock();
  return clock;
}
}  // namespace cistern
