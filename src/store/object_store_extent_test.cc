// Write space reserved ahead (extents): a put in one request. The client
// packs payloads into the extent, then PutExtent names them.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/store/layout.h"
#include "src/store/store_test_util.h"

namespace cistern::store {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;

struct Item {
  std::string key;
  std::string value;
};

class ExtentTest : public ::testing::Test {
 protected:
  ExtentTest() : h_(16 * kMiB) {}

  ObjectStore& store() { return h_.store(); }
  uint64_t used() { return store().Stats().tiers[0].used_bytes; }

  // What a client does: writes each payload where the packing puts it (raw
  // bytes), then sends the put.
  absl::StatusOr<std::vector<absl::StatusOr<uint64_t>>> Put(SessionId s,
                                                            const ObjectStore::ExtentInfo& e,
                                                            const std::vector<Item>& items) {
    std::vector<ObjectStore::ExtentPut> puts;
    uint64_t at = e.block_offset;
    for (const Item& it : items) {
      char* dst = h_.base() + at + PayloadOffset(it.key.size(), 0);
      if (at + BlockBytes(it.key.size(), 0, it.value.size()) <= e.block_offset + e.bytes) {
        std::memcpy(dst, it.value.data(), it.value.size());
      }
      ObjectStore::ExtentPut p;
      p.args.key = it.key;
      p.args.size = it.value.size();
      p.checksum = Checksum(it.value.data(), it.value.size());
      puts.push_back(p);
      at += BlockBytes(it.key.size(), 0, it.value.size());
    }
    return store().PutExtent(s, e.id, puts);
  }

  StoreHarness h_;
};

TEST_F(ExtentTest, OnePutStoresTheObjectAndGivesBackTheRest) {
  auto e = store().ReserveExtent(1, 0, 1 * kMiB);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->bytes, 1 * kMiB);
  EXPECT_EQ(used(), 1 * kMiB);
  EXPECT_EQ(store().Stats().pending_writes, 0u);  // not an object's write
  EXPECT_EQ(store().Stats().reserved_extents, 1u);
  EXPECT_EQ(store().Stats().reserved_bytes, 1 * kMiB);
  EXPECT_EQ(store().SessionInfo(1).reserved_bytes, 1 * kMiB);
  EXPECT_EQ(store().Stats().objects, 0u);  // not an object: invisible, unlisted
  std::string value(300000, 'a');
  auto r = Put(1, *e, {{"k", value}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  ASSERT_TRUE((*r)[0].ok()) << (*r)[0].status();
  EXPECT_EQ(h_.GetValue(2, "k").value(), value);
  EXPECT_EQ(used(), BlockBytes(1, 0, value.size()));
  EXPECT_EQ(store().Stats().reserved_extents, 0u);
  EXPECT_EQ(store().Stats().objects, 1u);
  // Used up: a second put into it finds nothing.
  EXPECT_EQ(Put(1, *e, {{"k2", "x"}}).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store().Remove("k", 0).ok());
  EXPECT_EQ(used(), 0u);
}

TEST_F(ExtentTest, ManyObjectsArePackedInOrderAndSurviveARestart) {
  auto e = store().ReserveExtent(1, 0, 1 * kMiB);
  ASSERT_TRUE(e.ok()) << e.status();
  std::vector<Item> items;
  uint64_t blocks = 0;
  for (int i = 0; i < 20; ++i) {
    items.push_back({"obj/" + std::to_string(i), std::string(1000 + 977 * i, char('a' + i))});
    blocks += BlockBytes(items.back().key.size(), 0, items.back().value.size());
  }
  auto r = Put(1, *e, items);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& g : *r) ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(used(), blocks);
  // Generations rise in the order of the items.
  for (size_t i = 1; i < r->size(); ++i) EXPECT_GT(*(*r)[i], *(*r)[i - 1]);
  // A restart walks the split blocks: every object verifies (checksums
  // included) and the rest of the extent is free.
  ASSERT_TRUE(h_.Reopen(Arena::OnCorrupt::kFail).ok());
  EXPECT_EQ(h_.report().objects, items.size());
  EXPECT_EQ(used(), blocks);
  for (const Item& it : items) EXPECT_EQ(h_.GetValue(2, it.key).value(), it.value) << it.key;
}

TEST_F(ExtentTest, ABadObjectIsRefusedAloneAndItsBlockFreed) {
  auto e = store().ReserveExtent(1, 0, 1 * kMiB);
  ASSERT_TRUE(e.ok());
  std::string nul_key("bad\0key", 7);
  auto r = Put(1, *e, {{"a", std::string(5000, 'a')}, {nul_key, "zzz"}, {"c", "ccc"}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_TRUE((*r)[0].ok());
  EXPECT_EQ((*r)[1].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT((*r)[1].status().message(), HasSubstr("NUL"));
  EXPECT_TRUE((*r)[2].ok());
  EXPECT_EQ(h_.GetValue(2, "c").value(), "ccc");
  EXPECT_EQ(used(), BlockBytes(1, 0, 5000) + BlockBytes(1, 0, 3));
  ASSERT_TRUE(h_.Reopen(Arena::OnCorrupt::kFail).ok());
  EXPECT_EQ(h_.report().objects, 2u);
}

TEST_F(ExtentTest, PerObjectRefusalsAreThoseOfSeal) {
  ASSERT_TRUE(h_.Put(1, "exists", "old").ok());
  auto e = store().ReserveExtent(1, 0, 1 * kMiB);
  ASSERT_TRUE(e.ok());
  std::vector<ObjectStore::ExtentPut> puts(2);
  puts[0].args.key = "exists";
  puts[0].args.size = 3;
  puts[0].args.if_absent = true;
  puts[1].args.key = "fresh";
  puts[1].args.size = 3;
  auto r = store().PutExtent(1, e->id, puts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE((*r)[1].ok());
  EXPECT_EQ(h_.GetValue(2, "exists").value(), "old");
}

TEST_F(ExtentTest, ARequestThatDoesNotFitChangesNothingAndKeepsTheExtent) {
  auto e = store().ReserveExtent(1, 0, 64 * 1024);
  ASSERT_TRUE(e.ok());
  const uint64_t before = used();
  auto r = Put(1, *e, {{"big", std::string(64 * 1024, 'b')}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("holds"));
  EXPECT_EQ(used(), before);
  EXPECT_EQ(store().Stats().objects, 0u);
  EXPECT_EQ(store().PutExtent(1, e->id, {}).status().code(), absl::StatusCode::kInvalidArgument);
  // Still there and usable.
  auto ok = Put(1, *e, {{"small", std::string(1000, 's')}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE((*ok)[0].ok());
}

TEST_F(ExtentTest, AnExtentIsItsSessionsOnlyAndNoObject) {
  auto e = store().ReserveExtent(1, 0, 1 * kMiB);
  ASSERT_TRUE(e.ok());
  // One per session.
  EXPECT_EQ(store().ReserveExtent(1, 0, 1 * kMiB).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Another session can neither use nor seal it.
  EXPECT_EQ(Put(2, *e, {{"k", "v"}}).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store().Seal(1, e->id, std::nullopt).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Bad sizes and tiers.
  EXPECT_EQ(store().ReserveExtent(2, 0, kMaxExtentBytes + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store().ReserveExtent(2, 0, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store().ReserveExtent(2, 7, 1 * kMiB).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Abort gives it back, and the session may hold another.
  ASSERT_TRUE(store().Abort(1, e->id).ok());
  EXPECT_EQ(used(), 0u);
  EXPECT_TRUE(store().ReserveExtent(1, 0, 1 * kMiB).ok());
}

TEST_F(ExtentTest, TheSessionEndingFreesItsExtent) {
  ASSERT_TRUE(store().ReserveExtent(1, 0, 1 * kMiB).ok());
  EXPECT_GT(used(), 0u);
  store().CloseSession(1);
  EXPECT_EQ(used(), 0u);
  EXPECT_EQ(store().Stats().reserved_bytes, 0u);
}

TEST_F(ExtentTest, ReservationsNeverEvictAndStayUnderAnEighthOfTheTier) {
  const uint64_t cap = store().Stats().tiers[0].capacity_bytes;
  // Extents hold at most an eighth of the tier, all sessions together.
  ASSERT_TRUE(store().ReserveExtent(1, 0, AlignUp(cap / 8 - 4096, 64)).ok());
  EXPECT_EQ(store().ReserveExtent(2, 0, 64 * 1024).status().code(),
            absl::StatusCode::kResourceExhausted);
  store().CloseSession(1);
  // Evictable objects to 90% of the tier: a reservation that would pass the
  // high watermark (95%) is refused rather than evicting them.
  const uint64_t each = cap * 9 / 10 / 8 - 4096;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(h_.Put(3, "e" + std::to_string(i), std::string(each, 'e'), true).ok());
  }
  auto r = store().ReserveExtent(2, 0, cap / 10);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_EQ(store().Stats().tiers[0].evictions, 0u);
  EXPECT_EQ(store().Stats().objects, 8u);
  EXPECT_TRUE(store().ReserveExtent(2, 0, cap / 50).ok());
}

}  // namespace
}  // namespace cistern::store
