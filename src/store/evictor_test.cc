#include "src/store/evictor.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/store/object_store.h"
#include "src/store/test_arena.h"

namespace cistern::store {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

Object MakeObject(uint64_t block_size) {
  Object obj;
  obj.block_size = block_size;
  obj.payload_size = block_size / 2;  // the list counts blocks, not payloads
  return obj;
}

// The list from least to most recently used, checking on the way that every
// back link mirrors its forward link and that size() is the length.
std::vector<Object*> Order(const LruList& list) {
  std::vector<Object*> out;
  Object* prev = nullptr;
  for (Object* o = list.Front(); o != nullptr; o = o->lru_next) {
    EXPECT_TRUE(o->in_lru);
    EXPECT_EQ(o->lru_prev, prev);
    out.push_back(o);
    prev = o;
    if (out.size() > list.size()) {
      ADD_FAILURE() << "the list is longer than its size " << list.size();
      break;
    }
  }
  EXPECT_EQ(out.size(), list.size());
  return out;
}

void ExpectUnlinked(const Object& obj) {
  EXPECT_FALSE(obj.in_lru);
  EXPECT_EQ(obj.lru_prev, nullptr);
  EXPECT_EQ(obj.lru_next, nullptr);
}

class LruListTest : public ::testing::Test {
 protected:
  LruList list_;
  Object a_ = MakeObject(64), b_ = MakeObject(128), c_ = MakeObject(256);
};

TEST_F(LruListTest, AnEmptyListHasNothingToEvict) {
  EXPECT_TRUE(list_.empty());
  EXPECT_EQ(list_.Front(), nullptr);
  EXPECT_EQ(list_.size(), 0u);
  EXPECT_EQ(list_.bytes(), 0u);
}

TEST_F(LruListTest, PushBackAppendsAsMostRecentlyUsed) {
  list_.PushBack(&a_);
  EXPECT_FALSE(list_.empty());
  EXPECT_EQ(list_.Front(), &a_);
  list_.PushBack(&b_);
  list_.PushBack(&c_);
  EXPECT_EQ(list_.Front(), &a_);
  EXPECT_THAT(Order(list_), ElementsAre(&a_, &b_, &c_));
  EXPECT_TRUE(a_.in_lru && b_.in_lru && c_.in_lru);
  EXPECT_EQ(c_.lru_next, nullptr);
}

TEST_F(LruListTest, BytesAndSizeCountBlockSizesOfTheObjectsInTheList) {
  list_.PushBack(&a_);
  list_.PushBack(&b_);
  EXPECT_EQ(list_.bytes(), 64u + 128u);
  EXPECT_EQ(list_.size(), 2u);
  list_.PushBack(&c_);
  EXPECT_EQ(list_.bytes(), 64u + 128u + 256u);
  list_.Remove(&b_);
  EXPECT_EQ(list_.bytes(), 64u + 256u);
  EXPECT_EQ(list_.size(), 2u);
}

TEST_F(LruListTest, EvictingFromTheFrontTakesObjectsInLeastRecentlyUsedOrder) {
  for (Object* o : {&b_, &c_, &a_}) list_.PushBack(o);
  std::vector<Object*> evicted;
  // Bounded, so that a list that does not shrink fails instead of hanging.
  for (int n = 0; n < 10 && !list_.empty(); ++n) {
    Object* victim = list_.Front();
    list_.Remove(victim);
    ExpectUnlinked(*victim);
    evicted.push_back(victim);
  }
  EXPECT_THAT(evicted, ElementsAre(&b_, &c_, &a_));
  EXPECT_EQ(list_.Front(), nullptr);
  EXPECT_EQ(list_.bytes(), 0u);
  EXPECT_EQ(list_.size(), 0u);
}

TEST_F(LruListTest, TouchingAnObjectMovesItToTheBack) {
  for (Object* o : {&a_, &b_, &c_}) list_.PushBack(o);
  // A touch is what a lease and its release do: Remove, then PushBack.
  list_.Remove(&a_);
  list_.PushBack(&a_);
  EXPECT_THAT(Order(list_), ElementsAre(&b_, &c_, &a_));
  EXPECT_EQ(list_.Front(), &b_);
  list_.Remove(&c_);  // from the middle
  list_.PushBack(&c_);
  EXPECT_THAT(Order(list_), ElementsAre(&b_, &a_, &c_));
  list_.Remove(&c_);  // the most recently used stays last
  list_.PushBack(&c_);
  EXPECT_THAT(Order(list_), ElementsAre(&b_, &a_, &c_));
  EXPECT_EQ(list_.bytes(), 64u + 128u + 256u);
  EXPECT_EQ(list_.size(), 3u);
}

TEST_F(LruListTest, RemovingTheFrontMakesTheNextObjectTheFront) {
  for (Object* o : {&a_, &b_, &c_}) list_.PushBack(o);
  list_.Remove(&a_);
  ExpectUnlinked(a_);
  EXPECT_EQ(list_.Front(), &b_);
  EXPECT_THAT(Order(list_), ElementsAre(&b_, &c_));
}

TEST_F(LruListTest, RemovingFromTheMiddleRelinksItsNeighbours) {
  for (Object* o : {&a_, &b_, &c_}) list_.PushBack(o);
  list_.Remove(&b_);
  ExpectUnlinked(b_);
  EXPECT_EQ(a_.lru_next, &c_);
  EXPECT_EQ(c_.lru_prev, &a_);
  EXPECT_THAT(Order(list_), ElementsAre(&a_, &c_));
}

TEST_F(LruListTest, RemovingTheBackMakesThePreviousObjectTheBack) {
  for (Object* o : {&a_, &b_, &c_}) list_.PushBack(o);
  list_.Remove(&c_);
  ExpectUnlinked(c_);
  EXPECT_EQ(b_.lru_next, nullptr);
  // A new object goes after b, which is now last.
  list_.PushBack(&c_);
  EXPECT_THAT(Order(list_), ElementsAre(&a_, &b_, &c_));
}

TEST_F(LruListTest, RemovingTheOnlyObjectEmptiesTheList) {
  list_.PushBack(&a_);
  list_.Remove(&a_);
  ExpectUnlinked(a_);
  EXPECT_TRUE(list_.empty());
  EXPECT_EQ(list_.Front(), nullptr);
  EXPECT_EQ(list_.bytes(), 0u);
  // The list is usable again, with a and b in the order pushed.
  list_.PushBack(&b_);
  list_.PushBack(&a_);
  EXPECT_THAT(Order(list_), ElementsAre(&b_, &a_));
}

TEST_F(LruListTest, RemovingAnObjectThatIsNotInTheListChangesNothing) {
  list_.PushBack(&a_);
  list_.PushBack(&b_);
  list_.Remove(&c_);  // never pushed
  list_.Remove(&b_);
  list_.Remove(&b_);  // already removed
  EXPECT_THAT(Order(list_), ElementsAre(&a_));
  EXPECT_EQ(list_.bytes(), 64u);
  EXPECT_EQ(list_.size(), 1u);
  ExpectUnlinked(c_);
}

TEST_F(LruListTest, ListsOfTwoTiersKeepSeparateOrders) {
  LruList other;
  Object d = MakeObject(512);
  list_.PushBack(&a_);
  other.PushBack(&b_);
  list_.PushBack(&c_);
  other.PushBack(&d);
  EXPECT_THAT(Order(list_), ElementsAre(&a_, &c_));
  EXPECT_THAT(Order(other), ElementsAre(&b_, &d));
  EXPECT_EQ(list_.bytes(), 64u + 256u);
  EXPECT_EQ(other.bytes(), 128u + 512u);
  list_.Remove(list_.Front());
  EXPECT_THAT(Order(list_), ElementsAre(&c_));
  EXPECT_THAT(Order(other), ElementsAre(&b_, &d));
  EXPECT_EQ(other.Front(), &b_);
}

using LruListDeathTest = LruListTest;

TEST_F(LruListDeathTest, PushingAnObjectThatIsAlreadyInAListAborts) {
  list_.PushBack(&a_);
  EXPECT_DEATH(list_.PushBack(&a_), "in_lru");
  LruList other;
  EXPECT_DEATH(other.PushBack(&a_), "in_lru");
}

// The store keeps one list per tier: an object leaves its tier's list while
// leased and rejoins it, as most recently used, when its last lease ends.
class TieredEvictionTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kArena = 64 * 1024;
  static constexpr size_t kValue = 4000;

  TieredEvictionTest() : fast_(kArena, "fast", 0), slow_(kArena, "slow", 1) {
    // Watermarks of 1: evict only when a put does not fit.
    std::vector<TierSpec> tiers = {{"fast", fast_.base(), fast_.size(), 1.0, 1.0},
                                   {"slow", slow_.base(), slow_.size(), 1.0, 1.0}};
    RecoveryReport report;
    auto s = ObjectStore::Open(tiers, StoreOptions(), &report);
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) store_ = std::move(*s);
  }

  absl::StatusOr<uint64_t> Put(std::string_view key, std::string_view tier) {
    ObjectStore::CreateArgs args;
    args.key = key;
    args.size = kValue;
    args.evictable = true;
    args.tier = tier;
    auto w = store_->Create(1, args);
    if (!w.ok()) return w.status();
    char* base = tier == "slow" ? slow_.base() : fast_.base();
    std::memset(base + w->payload_offset, 'v', kValue);
    return store_->Seal(1, w->write_id, std::nullopt);
  }
  bool Present(std::string_view key) { return store_->Stat(key).ok(); }
  TierStats Tier(int i) { return store_->Stats().tiers[i]; }

  TestRegion fast_, slow_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_F(TieredEvictionTest, FillingOneTierEvictsOnlyThatTiersObjects) {
  ASSERT_NE(store_, nullptr);
  for (std::string k : {"s0", "s1", "s2"}) ASSERT_TRUE(Put(k, "slow").ok());
  // Many times what the fast tier holds.
  for (int i = 0; i < 60; ++i) ASSERT_TRUE(Put("f" + std::to_string(i), "fast").ok());
  EXPECT_GT(Tier(0).evictions, 0u);
  EXPECT_EQ(Tier(1).evictions, 0u);
  for (std::string k : {"s0", "s1", "s2"}) EXPECT_TRUE(Present(k)) << k;
  EXPECT_FALSE(Present("f0"));
  EXPECT_TRUE(Present("f59"));
}

TEST_F(TieredEvictionTest, ALeasedObjectLeavesTheOrderAndRejoinsAtTheBackAtItsLastRelease) {
  ASSERT_NE(store_, nullptr);
  const std::vector<std::string> old_keys = {"e0", "e1", "e2", "e3"};
  for (const std::string& k : old_keys) ASSERT_TRUE(Put(k, "fast").ok());
  const uint64_t all = Tier(0).evictable_bytes;
  ASSERT_GT(all, 0u);
  auto l1 = store_->Get(2, "e0", 0);
  auto l2 = store_->Get(3, "e0", 0);
  ASSERT_TRUE(l1.ok() && l2.ok());
  const uint64_t without_e0 = Tier(0).evictable_bytes;
  EXPECT_LT(without_e0, all);
  ASSERT_TRUE(store_->Release(2, l1->lease_id).ok());
  EXPECT_EQ(Tier(0).evictable_bytes, without_e0);  // still leased by session 3
  ASSERT_TRUE(store_->Release(3, l2->lease_id).ok());
  EXPECT_EQ(Tier(0).evictable_bytes, all);
  // The order is now e1, e2, e3, e0: filling the tier must take them so.
  const std::vector<std::string> expected = {"e1", "e2", "e3", "e0"};
  std::vector<std::string> gone;
  for (int i = 0; i < 100 && Present("e0"); ++i) {
    ASSERT_TRUE(Put("new" + std::to_string(i), "fast").ok());
    for (const std::string& k : expected) {
      if (!Present(k) && std::find(gone.begin(), gone.end(), k) == gone.end()) gone.push_back(k);
    }
  }
  EXPECT_EQ(gone, expected);
  EXPECT_EQ(Tier(1).evictions, 0u);
}

}  // namespace
}  // namespace cistern::store
