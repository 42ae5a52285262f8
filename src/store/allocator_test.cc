#include "src/store/allocator.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace cistern::store {
namespace {

TEST(AllocatorTest, BestFitPicksSmallestRangeThatHolds) {
  Allocator a(0, 64 * 100);
  a.Free(0, 64 * 10);
  a.Free(64 * 20, 64 * 3);
  a.Free(64 * 30, 64 * 5);
  auto x = a.Allocate(64 * 3);
  ASSERT_TRUE(x);
  EXPECT_EQ(x->offset, 64u * 20);
  EXPECT_EQ(x->remainder_size, 0u);
  auto y = a.Allocate(64 * 4);
  ASSERT_TRUE(y);
  EXPECT_EQ(y->offset, 64u * 30);
  EXPECT_EQ(y->remainder_offset, 64u * 34);
  EXPECT_EQ(y->remainder_size, 64u);
  a.CheckInvariantsForTest();
}

TEST(AllocatorTest, FreeCoalescesWithBothNeighbours) {
  Allocator a(0, 64 * 3);
  a.Free(0, 64 * 3);
  auto x = a.Allocate(64);
  auto y = a.Allocate(64);
  auto z = a.Allocate(64);
  ASSERT_TRUE(x && y && z);
  EXPECT_EQ(a.free_bytes(), 0u);
  EXPECT_FALSE(a.Allocate(64));
  a.Free(x->offset, 64);
  a.Free(z->offset, 64);
  EXPECT_EQ(a.free_ranges(), 2u);
  EXPECT_DOUBLE_EQ(a.fragmentation(), 0.5);
  auto merged = a.Free(y->offset, 64);
  EXPECT_EQ(merged.first, 0u);
  EXPECT_EQ(merged.second, 64u * 3);
  EXPECT_EQ(a.free_ranges(), 1u);
  EXPECT_DOUBLE_EQ(a.fragmentation(), 0.0);
  a.CheckInvariantsForTest();
}

TEST(AllocatorTest, ExhaustionReturnsNothingAndChangesNothing) {
  Allocator a(4096, 64 * 8);
  a.Free(4096, 64 * 8);
  EXPECT_FALSE(a.Allocate(64 * 9));
  EXPECT_EQ(a.free_bytes(), 64u * 8);
  a.CheckInvariantsForTest();
}

TEST(AllocatorTest, RandomWorkloadKeepsInvariantsAndReturnsToEmpty) {
  std::mt19937_64 rng(7);
  const uint64_t kSize = 64 * 4096;
  Allocator a(0, kSize);
  a.Free(0, kSize);
  std::vector<std::pair<uint64_t, uint64_t>> live;
  for (int i = 0; i < 20000; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      uint64_t n = 64 * (1 + rng() % 64);
      if (auto x = a.Allocate(n)) live.push_back({x->offset, n});
    } else {
      size_t k = rng() % live.size();
      a.Free(live[k].first, live[k].second);
      live[k] = live.back();
      live.pop_back();
    }
    if (i % 1000 == 0) a.CheckInvariantsForTest();
  }
  uint64_t used = 0;
  for (auto& [o, n] : live) used += n;
  EXPECT_EQ(a.used_bytes(), used);
  for (auto& [o, n] : live) a.Free(o, n);
  EXPECT_EQ(a.free_bytes(), kSize);
  EXPECT_EQ(a.free_ranges(), 1u);
  a.CheckInvariantsForTest();
}

TEST(AllocatorDeathTest, DoubleFreeAborts) {
  Allocator a(0, 64 * 4);
  a.Free(0, 64 * 4);
  auto x = a.Allocate(64);
  a.Free(x->offset, 64);
  EXPECT_DEATH(a.Free(x->offset, 64), "double free");
}

}  // namespace
}  // namespace cistern::store
