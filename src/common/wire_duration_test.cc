// A wait of 10^13 ms (or UINT64_MAX, or Python's float('inf') saturated)
// once overflowed the daemon's parked deadline: signed overflow under UBSan,
// an answer at once in release builds. Every wait passes through here.
#include "src/common/wire_duration.h"

#include <limits>

#include "gtest/gtest.h"
#include "src/common/clock.h"

namespace cistern {
namespace {

using std::chrono::milliseconds;

TEST(WireDurationTest, HugeWireWaitsClampToTheMaximum) {
  EXPECT_EQ(WaitFromWireMs(10'000'000'000'000ull), kMaxWait);
  EXPECT_EQ(WaitFromWireMs(std::numeric_limits<uint64_t>::max()), kMaxWait);
  EXPECT_EQ(WaitFromWireMs(1500), milliseconds(1500));
  EXPECT_EQ(WaitFromWireMs(0), milliseconds(0));
}

TEST(WireDurationTest, ClampedWaitsAddToAClockReadingWithoutOverflow) {
  // The daemon's parked deadline: a clock reading plus the wait.
  Clock::TimePoint now = Clock::Real()->Now();
  Clock::TimePoint deadline = now + WaitFromWireMs(std::numeric_limits<uint64_t>::max());
  EXPECT_GT(deadline, now);
  EXPECT_EQ(deadline - now, kMaxWait);
}

TEST(WireDurationTest, CallerWaitsAreClampedBothWays) {
  EXPECT_EQ(WaitToWireMs(milliseconds(-5)), 0u);
  EXPECT_EQ(WaitToWireMs(milliseconds(std::numeric_limits<int64_t>::max())),
            static_cast<uint64_t>(kMaxWait.count()));
  EXPECT_EQ(WaitToWireMs(milliseconds(250)), 250u);
  EXPECT_EQ(ClampWait(milliseconds(std::numeric_limits<int64_t>::min())), milliseconds(0));
}

}  // namespace
}  // namespace cistern
