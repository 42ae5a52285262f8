// What the cluster agent relies on: observed visibility changes, an atomic
// snapshot, generations unique across hosts, and the local-only flag.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/units.h"
#include "src/store/object_store.h"
#include "src/store/store_test_util.h"

namespace cistern::store {
namespace {

using ::testing::ElementsAre;

class Recorder : public StoreObserver {
 public:
  void OnVisible(const ObjectInfo& info) override {
    events.push_back("+" + info.key + "@" + std::to_string(info.generation));
  }
  void OnGone(const ObjectInfo& info) override {
    events.push_back("-" + info.key + "@" + std::to_string(info.generation));
  }
  std::vector<std::string> events;
};

TEST(StoreClusterTest, ObserverSeesSealsRemovalsSupersedesAndEvictionsInOrder) {
  StoreHarness h(kMiB, 0.5, 0.1);
  Recorder r;
  h.store().SetObserver(&r);
  uint64_t a1 = *h.Put(1, "a", "x");
  uint64_t a2 = *h.Put(1, "a", "y");
  ASSERT_TRUE(h.store().Remove("a", 0).ok());
  uint64_t e = *h.Put(1, "e", std::string(300 << 10, 'e'), /*evictable=*/true);
  uint64_t f = *h.Put(1, "f", std::string(300 << 10, 'f'));  // pushes e out
  auto n = [](char c, uint64_t g) { return std::string(1, c) + "@" + std::to_string(g); };
  EXPECT_THAT(r.events,
              ElementsAre("+" + n('a', a1), "-" + n('a', a1), "+" + n('a', a2), "-" + n('a', a2),
                          "+" + n('e', e), "-" + n('e', e), "+" + n('f', f)));
  h.store().SetObserver(nullptr);
  ASSERT_TRUE(h.Put(1, "g", "z").ok());
  EXPECT_EQ(r.events.size(), 7u);
}

TEST(StoreClusterTest, SnapshotRunsItsCallbackUnderTheSameLock) {
  StoreHarness h(kMiB);
  ASSERT_TRUE(h.Put(1, "a", "1").ok());
  ASSERT_TRUE(h.Put(1, "b", "2").ok());
  std::vector<ObjectInfo> all;
  h.store().SnapshotVisible([&](const std::vector<ObjectInfo>& v) { all = v; });
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].key, "a");
  EXPECT_EQ(all[1].key, "b");
}

TEST(StoreClusterTest, GenerationsFollowTheHostsResidueAndTheFloor) {
  StoreHarness h(kMiB);
  uint64_t g0 = *h.Put(1, "k", "0");
  h.store().SetGenerationScheme(65536, 7);
  uint64_t g1 = *h.Put(1, "k", "1");
  EXPECT_GT(g1, g0);
  EXPECT_EQ(g1 % 65536, 7u);
  uint64_t g2 = *h.Put(1, "j", "2");
  EXPECT_EQ(g2, g1 + 65536);
  h.store().RaiseGenerationFloor(10 * 65536 + 100);
  uint64_t g3 = *h.Put(1, "k", "3");
  EXPECT_EQ(g3, 11 * 65536 + 7);
  EXPECT_EQ(h.store().max_generation(), g3);
  // The floor never lowers, and the scheme survives as the arenas' max generation does.
  h.store().RaiseGenerationFloor(5);
  EXPECT_EQ(*h.Put(1, "k", "4"), g3 + 65536);
  ASSERT_TRUE(h.Reopen().ok());
  EXPECT_GE(h.store().max_generation(), g3 + 65536);
}

TEST(StoreClusterTest, LocalOnlyIsRecordedAndSurvivesARestart) {
  StoreHarness h(kMiB);
  ObjectStore::CreateArgs args;
  args.key = "secret";
  args.size = 1;
  args.local_only = true;
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(h.store().Seal(1, w->write_id, std::nullopt).ok());
  ASSERT_TRUE(h.Put(1, "shared", "x").ok());
  EXPECT_TRUE(h.store().Stat("secret")->local_only);
  EXPECT_FALSE(h.store().Stat("shared")->local_only);
  ASSERT_TRUE(h.Reopen().ok());
  EXPECT_TRUE(h.store().Stat("secret")->local_only);
}

TEST(StoreClusterTest, AReplicaKeepsItsOriginsGenerationAndNeverGoesBackwards) {
  StoreHarness h(kMiB);
  h.store().SetGenerationScheme(65536, 2);
  auto replica = [&](std::string_view key, uint64_t generation) {
    ObjectStore::CreateArgs args;
    args.key = key;
    args.size = 4;
    args.replica_generation = generation;
    auto w = h.store().Create(1, args);
    EXPECT_TRUE(w.ok()) << w.status();
    return h.store().Seal(1, w->write_id, std::nullopt);
  };
  // Generation 65537 is host 1's; this host (residue 2) keeps it as it is.
  auto g = replica("model", 65537);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(*g, 65537u);
  EXPECT_EQ(h.store().Stat("model")->generation, 65537u);
  // A local put afterwards is numbered above it, under this host's residue.
  uint64_t local = *h.Put(1, "model", "newer");
  EXPECT_GT(local, 65537u);
  EXPECT_EQ(local % 65536, 2u);
  // A replica of an older or the same generation is refused and frees its block.
  uint64_t used = h.store().Stats().tiers[0].used_bytes;
  auto old = replica("model", 65537);
  EXPECT_EQ(old.status().code(), absl::StatusCode::kAlreadyExists) << old.status();
  EXPECT_EQ(h.store().Stat("model")->generation, local);
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, used);
  // It survives a restart with its generation.
  ASSERT_TRUE(replica("other", 131073).ok());
  ASSERT_TRUE(h.Reopen().ok());
  EXPECT_EQ(h.store().Stat("other")->generation, 131073u);
  EXPECT_GT(h.store().max_generation(), 131073u - 1);
}

}  // namespace
}  // namespace cistern::store
