// Issue 9, item 10: 50,000 malformed 13-byte frames wrote 17 MB of log in
// 0.7 s. The server's rejection lines now pass through a LogLimiter.
#include "src/daemon/log_limiter.h"

#include "gtest/gtest.h"

namespace cistern::daemon {
namespace {

TEST(LogLimiterTest, LetsABurstThroughThenTheRateAndCountsTheRest) {
  FakeClock clock;
  LogLimiter limiter(/*per_second=*/10, /*burst=*/5, &clock);
  uint64_t suppressed = 99;
  int allowed = 0;
  for (int i = 0; i < 50'000; ++i) allowed += limiter.Allow(&suppressed);
  EXPECT_EQ(allowed, 5);  // no time passed: the burst only
  EXPECT_EQ(suppressed, 0u);
  clock.Advance(std::chrono::milliseconds(100));  // one line's worth
  ASSERT_TRUE(limiter.Allow(&suppressed));
  EXPECT_EQ(suppressed, 50'000u - 5);
  EXPECT_FALSE(limiter.Allow(&suppressed));
  clock.Advance(std::chrono::seconds(1));
  allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += limiter.Allow(&suppressed);
  EXPECT_EQ(allowed, 5);  // a second's worth, capped at the burst
}

TEST(LogLimiterTest, AQuietLimiterNeverDrops) {
  FakeClock clock;
  LogLimiter limiter(20, 50, &clock);
  uint64_t suppressed = 0;
  for (int i = 0; i < 1000; ++i) {
    clock.Advance(std::chrono::milliseconds(50));  // exactly the rate
    ASSERT_TRUE(limiter.Allow(&suppressed));
    EXPECT_EQ(suppressed, 0u);
  }
}

}  // namespace
}  // namespace cistern::daemon
