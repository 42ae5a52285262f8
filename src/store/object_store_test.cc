#include "src/store/object_store.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/units.h"
#include "src/store/store_test_util.h"

namespace cistern::store {
namespace {

using ::testing::HasSubstr;

TEST(ObjectStoreTest, PutThenGetReturnsTheBytes) {
  StoreHarness h(kMiB);
  auto g = h.Put(1, "a", "hello");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_GT(*g, 0u);
  EXPECT_EQ(*h.GetValue(2, "a"), "hello");
}

TEST(ObjectStoreTest, EveryPutOfAKeyMakesAStrictlyHigherGeneration) {
  StoreHarness h(kMiB);
  uint64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    auto g = h.Put(1, "k", "v" + std::to_string(i));
    ASSERT_TRUE(g.ok());
    EXPECT_GT(*g, last);
    last = *g;
  }
  EXPECT_EQ(*h.GetValue(1, "k"), "v4");
}

TEST(ObjectStoreTest, UnsealedWriteIsInvisible) {
  StoreHarness h(kMiB);
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 10;
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(h.store().Get(2, "k", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.store().Stat("k").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(h.store().List("", 10, "").objects.empty());
  ASSERT_TRUE(h.store().Seal(1, w->write_id, std::nullopt).ok());
  EXPECT_TRUE(h.store().Get(2, "k", 0).ok());
}

TEST(ObjectStoreTest, AbortFreesTheSpaceAndLeavesNothingVisible) {
  StoreHarness h(kMiB);
  uint64_t baseline = h.store().Stats().tiers[0].used_bytes;
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 4096;
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(w.ok());
  EXPECT_GT(h.store().Stats().tiers[0].used_bytes, baseline);
  ASSERT_TRUE(h.store().Abort(1, w->write_id).ok());
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, baseline);
  EXPECT_EQ(h.store().Get(1, "k", 0).status().code(), absl::StatusCode::kNotFound);
}

TEST(ObjectStoreTest, SealOfAnotherSessionsWriteIsDeniedAndChangesNothing) {
  StoreHarness h(kMiB);
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 8;
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(w.ok());
  auto s = h.store().Seal(2, w->write_id, std::nullopt);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(h.store().Abort(2, w->write_id).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(h.store().Seal(1, w->write_id, std::nullopt).ok());
}

// An inline put: the store copies the request's bytes into the pending
// write. Only exactly the payload's size, only by the write's session;
// a refused fill leaves the write pending and its bytes untouched.
TEST(ObjectStoreTest, FillWriteCopiesExactlyThePayloadForItsOwnSession) {
  StoreHarness h(kMiB);
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 5;
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(h.store().FillWrite(1, w->write_id, "1234").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.store().FillWrite(1, w->write_id, "123456").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.store().FillWrite(2, w->write_id, "12345").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.store().FillWrite(1, 999, "12345").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(h.store().FillWrite(1, w->write_id, "hello").ok());
  EXPECT_EQ(h.store().Stats().pending_writes, 1u);
  ASSERT_TRUE(h.store().Seal(1, w->write_id, std::nullopt).ok());
  EXPECT_EQ(*h.GetValue(2, "k"), "hello");
  EXPECT_EQ(h.store().FillWrite(1, w->write_id, "later").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*h.GetValue(2, "k"), "hello");
}

TEST(ObjectStoreTest, DoubleSealIsNotFound) {
  StoreHarness h(kMiB);
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 8;
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(h.store().Seal(1, w->write_id, std::nullopt).ok());
  auto again = h.store().Seal(1, w->write_id, std::nullopt);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("already sealed"));
}

TEST(ObjectStoreTest, GetByGenerationReadsExactlyThatGeneration) {
  StoreHarness h(kMiB);
  uint64_t g1 = *h.Put(1, "k", "one");
  EXPECT_EQ(*h.GetValue(1, "k", g1), "one");
  uint64_t g2 = *h.Put(1, "k", "two");
  auto old = h.store().Get(1, "k", g1);
  EXPECT_EQ(old.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*h.GetValue(1, "k", g2), "two");
}

TEST(ObjectStoreTest, RemoveHidesAtOnceAndFreesAtLastRelease) {
  StoreHarness h(kMiB);
  uint64_t baseline = h.store().Stats().tiers[0].used_bytes;
  ASSERT_TRUE(h.Put(1, "k", std::string(1000, 'x')).ok());
  auto lease = h.store().Get(2, "k", 0);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  EXPECT_EQ(h.store().Get(3, "k", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.store().Stats().deferred_frees, 1u);
  // The leased bytes are still intact.
  EXPECT_EQ(h.Bytes(*lease), std::string(1000, 'x'));
  EXPECT_GT(h.store().Stats().tiers[0].used_bytes, baseline);
  ASSERT_TRUE(h.store().Release(2, lease->lease_id).ok());
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, baseline);
  EXPECT_EQ(h.store().Stats().deferred_frees, 0u);
}

TEST(ObjectStoreTest, SupersededGenerationIsFreedWhenItsLastLeaseEnds) {
  StoreHarness h(kMiB);
  ASSERT_TRUE(h.Put(1, "k", std::string(5000, 'a')).ok());
  uint64_t one = h.store().Stats().tiers[0].used_bytes;
  auto lease = h.store().Get(2, "k", 0);
  ASSERT_TRUE(h.Put(1, "k", std::string(5000, 'b')).ok());
  EXPECT_GT(h.store().Stats().tiers[0].used_bytes, one);
  EXPECT_EQ(h.Bytes(*lease), std::string(5000, 'a'));
  ASSERT_TRUE(h.store().Release(2, lease->lease_id).ok());
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, one);
  EXPECT_EQ(*h.GetValue(1, "k"), std::string(5000, 'b'));
}

TEST(ObjectStoreTest, StaleReferenceNeverReadsAReusedBlock) {
  // The block of a removed generation is reused by the next put; a get of the
  // old (key, generation) must fail rather than see the new bytes.
  StoreHarness h(kMiB);
  uint64_t g1 = *h.Put(1, "k", std::string(100, 'a'));
  ASSERT_TRUE(h.store().Remove("k", g1).ok());
  uint64_t g2 = *h.Put(1, "k", std::string(100, 'b'));
  EXPECT_NE(g1, g2);
  EXPECT_EQ(h.store().Get(1, "k", g1).status().code(), absl::StatusCode::kNotFound);
}

TEST(ObjectStoreTest, ConditionalRemoveOfANonCurrentGenerationChangesNothing) {
  StoreHarness h(kMiB);
  uint64_t g1 = *h.Put(1, "k", "a");
  uint64_t g2 = *h.Put(1, "k", "b");
  auto r = h.store().Remove("k", g1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*h.GetValue(1, "k", g2), "b");
  EXPECT_EQ(*h.store().Remove("k", g2), g2);
  EXPECT_EQ(h.store().Remove("k", 0).status().code(), absl::StatusCode::kNotFound);
}

TEST(ObjectStoreTest, IfAbsentFirstWriterWins) {
  StoreHarness h(kMiB);
  ASSERT_TRUE(h.Put(1, "k", "first", false, true).ok());
  auto second = h.Put(2, "k", "second", false, true);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*h.GetValue(1, "k"), "first");
}

TEST(ObjectStoreTest, IfAbsentLosesAtSealWhenAnotherWriterSealedFirst) {
  StoreHarness h(kMiB);
  uint64_t baseline = h.store().Stats().tiers[0].used_bytes;
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 8;
  args.if_absent = true;
  auto a = h.store().Create(1, args);
  auto b = h.store().Create(2, args);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(h.store().Seal(2, b->write_id, std::nullopt).ok());
  EXPECT_EQ(h.store().Seal(1, a->write_id, std::nullopt).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(h.store().Stats().pending_writes, 0u);
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, baseline);
}

TEST(ObjectStoreTest, BadKeysAreRejectedWithoutChange) {
  StoreHarness h(kMiB);
  EXPECT_EQ(h.Put(1, "", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Put(1, std::string(1025, 'k'), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Put(1, std::string("a\0b", 3), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Put(1, "bad\xff", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(h.Put(1, std::string(1024, 'k'), "x").ok());
  EXPECT_TRUE(h.Put(1, "ключ/τ", "x").ok());
  EXPECT_EQ(h.store().Stats().objects, 2u);
}

TEST(ObjectStoreTest, ZeroAndOversizedSizesAreInvalidArgument) {
  StoreHarness h(kMiB);
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 0;
  EXPECT_EQ(h.store().Create(1, args).status().code(), absl::StatusCode::kInvalidArgument);
  args.size = 2 * kMiB;
  auto s = h.store().Create(1, args);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("does not fit"));
  args.size = UINT64_MAX;
  EXPECT_EQ(h.store().Create(1, args).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.store().Stats().pending_writes, 0u);
}

TEST(ObjectStoreTest, UnknownTierIsInvalidArgument) {
  StoreHarness h(kMiB);
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 1;
  args.tier = "gpu";
  auto s = h.store().Create(1, args);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("unknown tier 'gpu'"));
}

TEST(ObjectStoreTest, TensorDictManifestIsValidatedAndStored) {
  StoreHarness h(kMiB);
  ObjectStore::CreateArgs args;
  args.key = "sd";
  args.size = 128;
  args.tensors = {{"w", DType::kFloat32, {4, 4}, 0, 64}, {"b", DType::kFloat16, {4}, 64, 8}};
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(h.store().Seal(1, w->write_id, std::nullopt).ok());
  EXPECT_EQ(h.store().Stat("sd")->tensors, 2u);
  args.key = "bad";
  args.tensors[1].offset = 32;  // overlaps "w" and is unaligned
  EXPECT_EQ(h.store().Create(1, args).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ObjectStoreTest, FullTierIsResourceExhaustedAndAtomic) {
  StoreHarness h(64 * 1024);
  int stored = 0;
  absl::Status last;
  for (int i = 0; i < 100; ++i) {
    auto g = h.Put(1, "k" + std::to_string(i), std::string(4000, 'p'));
    if (!g.ok()) {
      last = g.status();
      break;
    }
    ++stored;
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(last.message()), HasSubstr("no room"));
  EXPECT_EQ(h.store().Stats().objects, static_cast<uint64_t>(stored));
  EXPECT_EQ(h.store().Stats().pending_writes, 0u);
  EXPECT_EQ(h.store().Get(1, "k" + std::to_string(stored), 0).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ObjectStoreTest, EvictableObjectsAreEvictedLeastRecentlyUsedFirst) {
  StoreHarness h(64 * 1024, 1.0, 1.0);  // evict only when a put does not fit
  const std::string v(4000, 'e');
  int n = 0;
  while (h.store().Stats().tiers[0].largest_free_bytes > 8192) {
    ASSERT_TRUE(h.Put(1, "e" + std::to_string(n++), v, /*evictable=*/true).ok());
  }
  // Touch e0 so e1 is the least recently used.
  ASSERT_TRUE(h.GetValue(1, "e0").ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(h.Put(1, "new" + std::to_string(i), v, true).ok());
  EXPECT_TRUE(h.GetValue(1, "e0").ok());
  EXPECT_EQ(h.GetValue(1, "e1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_GT(h.store().Stats().tiers[0].evictions, 0u);
}

TEST(ObjectStoreTest, LeasedAndPinnedObjectsAreNeverEvicted) {
  StoreHarness h(64 * 1024, 1.0, 1.0);
  const std::string v(4000, 'x');
  ASSERT_TRUE(h.Put(1, "pinned", v).ok());
  ASSERT_TRUE(h.Put(1, "leased", v, true).ok());
  auto lease = h.store().Get(1, "leased", 0);
  ASSERT_TRUE(lease.ok());
  // Fill the tier with evictable objects many times over.
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(h.Put(1, "c" + std::to_string(i), v, true).ok());
  EXPECT_TRUE(h.GetValue(2, "pinned").ok());
  EXPECT_EQ(h.Bytes(*lease), v);
  EXPECT_TRUE(h.GetValue(2, "leased").ok());
  // With only pinned and leased objects left, a put that does not fit fails.
  ASSERT_TRUE(h.store().Release(1, lease->lease_id).ok());
}

TEST(ObjectStoreTest, HighWatermarkEvictsDownToLowWatermark) {
  StoreHarness h(64 * 1024, 0.5, 0.25);
  const std::string v(2000, 'w');
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(h.Put(1, "w" + std::to_string(i), v, true).ok());
  auto t = h.store().Stats().tiers[0];
  EXPECT_LE(t.used_bytes, t.capacity_bytes / 2);
  EXPECT_GT(t.evictions, 0u);
}

TEST(ObjectStoreTest, ClosingASessionReleasesLeasesAndAbortsWrites) {
  StoreHarness h(kMiB);
  uint64_t baseline = h.store().Stats().tiers[0].used_bytes;
  ASSERT_TRUE(h.Put(1, "k", std::string(3000, 'z')).ok());
  uint64_t with_k = h.store().Stats().tiers[0].used_bytes;
  ASSERT_TRUE(h.store().Get(7, "k", 0).ok());
  ASSERT_TRUE(h.store().Get(7, "k", 0).ok());
  ObjectStore::CreateArgs args;
  args.key = "pending";
  args.size = 10000;
  ASSERT_TRUE(h.store().Create(7, args).ok());
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  EXPECT_EQ(h.store().SessionInfo(7).leases, 2u);
  EXPECT_EQ(h.store().SessionInfo(7).pending_writes, 1u);
  EXPECT_GT(h.store().Stats().tiers[0].used_bytes, with_k);
  h.store().CloseSession(7);
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, baseline);
  EXPECT_EQ(h.store().Stats().leases, 0u);
  EXPECT_EQ(h.store().Stats().pending_writes, 0u);
}

TEST(ObjectStoreTest, ReleaseOfUnknownOrForeignLeaseFails) {
  StoreHarness h(kMiB);
  ASSERT_TRUE(h.Put(1, "k", "v").ok());
  auto l = h.store().Get(1, "k", 0);
  EXPECT_EQ(h.store().Release(1, 999).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.store().Release(2, l->lease_id).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(h.store().Release(1, l->lease_id).ok());
  EXPECT_EQ(h.store().Release(1, l->lease_id).code(), absl::StatusCode::kNotFound);
}

TEST(ObjectStoreTest, ListPagesInKeyOrderWithPrefixAndCursor) {
  StoreHarness h(kMiB);
  for (std::string k : {"b/2", "a/1", "b/1", "b/3", "c/1"}) ASSERT_TRUE(h.Put(1, k, k).ok());
  auto p1 = h.store().List("b/", 2, "");
  ASSERT_EQ(p1.objects.size(), 2u);
  EXPECT_EQ(p1.objects[0].key, "b/1");
  EXPECT_EQ(p1.objects[1].key, "b/2");
  EXPECT_EQ(p1.next_cursor, "b/2");
  auto p2 = h.store().List("b/", 2, p1.next_cursor);
  ASSERT_EQ(p2.objects.size(), 1u);
  EXPECT_EQ(p2.objects[0].key, "b/3");
  EXPECT_EQ(p2.next_cursor, "");
  EXPECT_EQ(h.store().List("", 100, "").objects.size(), 5u);
}

// Regression: List with limit SIZE_MAX ("no limit") asked the table for
// limit + 1 = 0 objects and returned none.
TEST(ObjectStoreTest, ListWithTheLargestLimitReturnsEverything) {
  StoreHarness h(kMiB);
  for (std::string k : {"a", "b", "c"}) ASSERT_TRUE(h.Put(1, k, k).ok());
  auto page = h.store().List("", SIZE_MAX, "");
  EXPECT_EQ(page.objects.size(), 3u);
  EXPECT_EQ(page.next_cursor, "");
}

TEST(ObjectStoreTest, RecoveryKeepsSealedObjectsAndFreesUnsealedOnes) {
  StoreHarness h(kMiB);
  uint64_t baseline = h.store().Stats().tiers[0].used_bytes;
  uint64_t g = *h.Put(1, "kept", "sealed bytes");
  ASSERT_TRUE(h.Put(1, "gone", "x").ok());
  ASSERT_TRUE(h.store().Remove("gone", 0).ok());
  ASSERT_TRUE(h.Put(1, "leased-then-removed", "y").ok());
  ASSERT_TRUE(h.store().Get(1, "leased-then-removed", 0).ok());
  ASSERT_TRUE(h.store().Remove("leased-then-removed", 0).ok());
  ObjectStore::CreateArgs args;
  args.key = "half-written";
  args.size = 1000;
  ASSERT_TRUE(h.store().Create(1, args).ok());
  ASSERT_TRUE(h.Reopen().ok());
  EXPECT_EQ(*h.GetValue(1, "kept", g), "sealed bytes");
  EXPECT_EQ(h.store().Get(1, "half-written", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.store().Get(1, "leased-then-removed", 0).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(h.report().objects, 1u);
  EXPECT_EQ(h.report().freed_blocks, 2u);
  ASSERT_TRUE(h.store().Remove("kept", 0).ok());
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, baseline);
  EXPECT_EQ(h.store().Stats().tiers[0].largest_free_bytes,
            h.store().Stats().tiers[0].capacity_bytes);
}

TEST(ObjectStoreTest, GenerationsStayMonotonicAcrossRestarts) {
  StoreHarness h(kMiB);
  uint64_t g1 = *h.Put(1, "k", "a");
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  ASSERT_TRUE(h.Reopen().ok());
  uint64_t g2 = *h.Put(1, "k", "b");
  EXPECT_GT(g2, g1);
}

TEST(ObjectStoreTest, RecoveryKeepsEvictabilityAndLruMembership) {
  StoreHarness h(64 * 1024, 1.0, 1.0);
  ASSERT_TRUE(h.Put(1, "cache", std::string(4000, 'c'), true).ok());
  ASSERT_TRUE(h.Reopen().ok());
  EXPECT_TRUE(h.store().Stat("cache")->evictable);
  EXPECT_GT(h.store().Stats().tiers[0].evictable_bytes, 0u);
}

TEST(ObjectStoreTest, AHeldObjectCannotBeRemovedOrReplacedUntilReleased) {
  StoreHarness h(kMiB);
  auto g = h.Put(1, "k", "held bytes");
  ASSERT_TRUE(g.ok());
  auto hold = h.store().Hold(7, "k", *g, "stream 's'");
  ASSERT_TRUE(hold.ok()) << hold.status();
  auto removed = h.store().Remove("k", 0);
  EXPECT_EQ(removed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(removed.status().message(), HasSubstr("stream 's'"));
  // A plain put of the key is refused at create; nothing is reserved.
  uint64_t used = h.store().Stats().tiers[0].used_bytes;
  auto replaced = h.Put(1, "k", "new bytes");
  EXPECT_EQ(replaced.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, used);
  EXPECT_EQ(*h.GetValue(2, "k"), "held bytes");
  ASSERT_TRUE(h.store().Release(7, hold->lease_id).ok());
  EXPECT_TRUE(h.store().Remove("k", *g).ok());
}

TEST(ObjectStoreTest, AHoldTakenBetweenCreateAndSealRefusesTheSeal) {
  StoreHarness h(kMiB);
  auto g = h.Put(1, "k", "first");
  ASSERT_TRUE(g.ok());
  ObjectStore::CreateArgs args;
  args.key = "k";
  args.size = 6;
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(w.ok());
  auto hold = h.store().Hold(7, "k", *g, "stream 's'");
  ASSERT_TRUE(hold.ok());
  auto sealed = h.store().Seal(1, w->write_id, std::nullopt);
  EXPECT_EQ(sealed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(h.store().Stats().pending_writes, 0u);  // the write was aborted
  EXPECT_EQ(*h.GetValue(2, "k"), "first");
}

TEST(ObjectStoreTest, APlainLeaseDoesNotHold) {
  StoreHarness h(kMiB);
  auto g = h.Put(1, "k", "v");
  ASSERT_TRUE(g.ok());
  auto lease = h.store().Get(7, "k", 0);
  ASSERT_TRUE(lease.ok());
  EXPECT_TRUE(h.store().Remove("k", 0).ok());  // the lease keeps the bytes, not the key
}

TEST(ObjectStoreTest, EndingTheHoldersSessionEndsTheHold) {
  StoreHarness h(kMiB);
  auto g = h.Put(1, "k", "v");
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(h.store().Hold(7, "k", *g, "stream 's'").ok());
  h.store().CloseSession(7);
  EXPECT_TRUE(h.store().Remove("k", 0).ok());
}

}  // namespace
}  // namespace cistern::store
