// Arena format checks and recovery from hand-corrupted arenas.
#include "src/store/arena.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/store/store_test_util.h"

namespace cistern::store {
namespace {

using ::testing::HasSubstr;
constexpr uint64_t kSize = 1 << 20;

TEST(ArenaTest, AttachRejectsWhatIsNotAnArena) {
  std::vector<char> junk(kSize, 'j');
  auto a = Arena::Attach(junk.data(), kSize, 0, "mem");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("not a Cistern arena"));
}

TEST(ArenaTest, AttachRejectsAnotherLayoutVersion) {
  TestRegion r(kSize);
  reinterpret_cast<Superblock*>(r.base())->layout_version = kLayoutVersion + 1;
  auto a = Arena::Attach(r.base(), kSize, 0, "mem");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("layout version"));
}

TEST(ArenaTest, AttachRejectsWrongSizeAndWrongTier) {
  TestRegion r(kSize);
  EXPECT_THAT(std::string(Arena::Attach(r.base(), kSize / 2, 0, "mem").status().message()),
              HasSubstr("formatted for"));
  EXPECT_THAT(std::string(Arena::Attach(r.base(), kSize, 0, "ssd").status().message()),
              HasSubstr("belongs to tier"));
  EXPECT_TRUE(Arena::Attach(r.base(), kSize, 0, "mem").ok());
}

TEST(ArenaTest, DamagedSuperblockIsRejected) {
  TestRegion r(kSize);
  reinterpret_cast<Superblock*>(r.base())->data_bytes ^= 64;
  EXPECT_THAT(std::string(Arena::Attach(r.base(), kSize, 0, "mem").status().message()),
              HasSubstr("checksum"));
}

TEST(ArenaTest, FormatRejectsTinyRegionsAndBadNames) {
  std::vector<char> small(4096);
  EXPECT_FALSE(Arena::Format(small.data(), small.size(), 0, "mem", 0).ok());
  TestRegion r(kSize);
  EXPECT_FALSE(Arena::Format(r.base(), kSize, 0, std::string(33, 'n'), 0).ok());
}

// Finds the block offset of the first object with `key` by walking the arena.
uint64_t FindBlock(char* base, uint64_t size, std::string_view key) {
  uint64_t off = kSuperblockBytes;
  while (off < size) {
    auto* h = reinterpret_cast<ObjectHeader*>(base + off);
    if (TagKind(h->tag) == kObjectBlock &&
        std::string_view(base + off + sizeof(ObjectHeader), h->key_bytes) == key) {
      return off;
    }
    off += TagSize(h->tag);
  }
  return 0;
}

TEST(ArenaRecoveryTest, FailPolicyMakesAFlippedPayloadByteDataLossNamingTheObject) {
  StoreHarness h(kSize);
  ASSERT_TRUE(h.Put(1, "good", std::string(500, 'g')).ok());
  ASSERT_TRUE(h.Put(1, "victim", std::string(500, 'v')).ok());
  auto lease = h.store().Get(1, "victim", 0);
  h.base()[lease->payload_offset + 100] ^= 1;
  auto s = h.Reopen(Arena::OnCorrupt::kFail);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'victim'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("payload checksum"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("--format"));
}

TEST(ArenaRecoveryTest, DropPolicyDropsOnlyTheCorruptObject) {
  StoreHarness h(kSize);
  ASSERT_TRUE(h.Put(1, "good", std::string(500, 'g')).ok());
  ASSERT_TRUE(h.Put(1, "victim", std::string(500, 'v')).ok());
  ASSERT_TRUE(h.Put(1, "good2", std::string(500, 'h')).ok());
  uint64_t block = FindBlock(h.base(), kSize, "victim");
  ASSERT_NE(block, 0u);
  reinterpret_cast<ObjectHeader*>(h.base() + block)->payload_size += 1;  // header checksum
  ASSERT_TRUE(h.Reopen(Arena::OnCorrupt::kDrop).ok());
  ASSERT_EQ(h.report().dropped.size(), 1u);
  EXPECT_EQ(h.report().dropped[0].key, "victim");
  EXPECT_THAT(h.report().dropped[0].reason, HasSubstr("header checksum"));
  EXPECT_EQ(*h.GetValue(1, "good"), std::string(500, 'g'));
  EXPECT_EQ(*h.GetValue(1, "good2"), std::string(500, 'h'));
  EXPECT_EQ(h.store().Get(1, "victim", 0).status().code(), absl::StatusCode::kNotFound);
}

// A stray write into one sealed object made the default recovery policy
// refuse to start, so every object on the host was unavailable (issue 9, 3).
TEST(ArenaRecoveryTest, ByDefaultACorruptObjectIsQuarantinedAndTheRestServed) {
  StoreHarness h(kSize);
  ASSERT_TRUE(h.Put(1, "good", std::string(500, 'g')).ok());
  ASSERT_TRUE(h.Put(1, "victim", std::string(500, 'v')).ok());
  uint64_t block = FindBlock(h.base(), kSize, "victim");
  h.CorruptForTest("victim");
  ASSERT_TRUE(h.Reopen().ok());
  ASSERT_EQ(h.report().quarantined.size(), 1u);
  EXPECT_EQ(h.report().quarantined[0].key, "victim");
  EXPECT_EQ(h.report().quarantined[0].block_offset, block);
  EXPECT_THAT(h.report().quarantined[0].reason, HasSubstr("payload checksum"));
  EXPECT_EQ(*h.GetValue(1, "good"), std::string(500, 'g'));
  EXPECT_EQ(h.store().Get(1, "victim", 0).status().code(), absl::StatusCode::kNotFound);
  // Its bytes are kept (the block stays in use) across restarts until removed.
  uint64_t used = h.store().Stats().tiers[0].used_bytes;
  EXPECT_EQ(h.store().Stats().quarantined_objects, 1u);
  ASSERT_TRUE(h.Reopen().ok());
  ASSERT_EQ(h.store().Quarantined().size(), 1u);
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, used);
  // A new put of the key is an ordinary object beside the quarantined one.
  ASSERT_TRUE(h.Put(1, "victim", "fresh").ok());
  EXPECT_EQ(*h.GetValue(1, "victim"), "fresh");
  // The operator removes it; a wrong offset changes nothing.
  EXPECT_EQ(h.store().RemoveQuarantined("mem", block + 64).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.store().RemoveQuarantined("nosuch", block).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(h.store().RemoveQuarantined("mem", block).ok());
  EXPECT_TRUE(h.store().Quarantined().empty());
  EXPECT_LT(h.store().Stats().tiers[0].used_bytes, used);
  ASSERT_TRUE(h.Reopen().ok());
  EXPECT_TRUE(h.report().quarantined.empty());
  EXPECT_EQ(*h.GetValue(1, "victim"), "fresh");
}

TEST(ArenaRecoveryTest, BrokenBlockChainIsDataLoss) {
  StoreHarness h(kSize);
  ASSERT_TRUE(h.Put(1, "a", "x").ok());
  uint64_t block = FindBlock(h.base(), kSize, "a");
  reinterpret_cast<ObjectHeader*>(h.base() + block)->tag = MakeTag(64 * 3, 7);
  auto s = h.Reopen();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("invalid block tag"));
  // Neither drop nor quarantine accepts a broken chain: nothing after it can be trusted.
  EXPECT_EQ(h.Reopen(Arena::OnCorrupt::kDrop).code(), absl::StatusCode::kDataLoss);
}

TEST(ArenaRecoveryTest, BlockSizeRunningPastTheEndIsDataLoss) {
  StoreHarness h(kSize);
  ASSERT_TRUE(h.Put(1, "a", "x").ok());
  uint64_t block = FindBlock(h.base(), kSize, "a");
  reinterpret_cast<ObjectHeader*>(h.base() + block)->tag = MakeTag(kSize * 2, kObjectBlock);
  EXPECT_EQ(h.Reopen().code(), absl::StatusCode::kDataLoss);
}

TEST(ArenaRecoveryTest, TwoSealedGenerationsOfAKeyKeepTheNewest) {
  // A crash between sealing generation 2 and retiring generation 1 leaves both
  // sealed in the arena.
  StoreHarness h(kSize);
  ASSERT_TRUE(h.Put(1, "k", "old").ok());
  uint64_t old_block = FindBlock(h.base(), kSize, "k");
  auto lease = h.store().Get(1, "k", 0);  // keeps the old block from being freed
  uint64_t g2 = *h.Put(1, "k", "new");
  auto* old_header = reinterpret_cast<ObjectHeader*>(h.base() + old_block);
  old_header->state = static_cast<uint32_t>(ObjectState::kSealed);
  ASSERT_TRUE(h.Reopen().ok());
  EXPECT_EQ(h.report().superseded, 1u);
  EXPECT_EQ(*h.GetValue(1, "k"), "new");
  EXPECT_EQ(h.store().Stat("k")->generation, g2);
}

TEST(ArenaRecoveryTest, RecoveredArenaCoalescesFreeSpace) {
  StoreHarness h(kSize);
  for (int i = 0; i < 10; ++i) {
    ObjectStore::CreateArgs args;
    std::string key = "w" + std::to_string(i);
    args.key = key;
    args.size = 1000;
    ASSERT_TRUE(h.store().Create(1, args).ok());
  }
  ASSERT_TRUE(h.Reopen().ok());
  auto t = h.store().Stats().tiers[0];
  EXPECT_EQ(t.used_bytes, 0u);
  EXPECT_EQ(t.largest_free_bytes, t.capacity_bytes);
  EXPECT_EQ(h.report().freed_blocks, 10u);
}

}  // namespace
}  // namespace cistern::store
