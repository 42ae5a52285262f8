// The injectable clock. Every lease age, timeout and deadline in Cistern goes
// through a Clock so that tests advance time by hand instead of sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace cistern {

class Clock {
 public:
  using Duration = std::chrono::nanoseconds;
  using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

  virtual ~Clock() = default;
  // Monotonic time. Thread-safe.
  virtual TimePoint Now() const = 0;

  // The process-wide steady clock.
  static Clock* Real();
};

// Wall-clock milliseconds since the Unix epoch (for records people read:
// creation times, session starts). Never for deadlines: use a Clock.
uint64_t UnixMs();

// A clock that moves only when told to. Thread-safe.
class FakeClock : public Clock {
 public:
  TimePoint Now() const override { return TimePoint(Duration(now_ns_.load())); }
  void Advance(Duration d) { now_ns_.fetch_add(d.count()); }

 private:
  std::atomic<int64_t> now_ns_{1'000'000'000};
};

}  // namespace cistern
