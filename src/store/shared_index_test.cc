#include "src/store/shared_index.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/store/test_arena.h"

namespace cistern::store {
namespace {

using ::testing::HasSubstr;

// Every entry Find reports for `key` (a real reader checks the arena).
std::vector<SharedIndexReader::Entry> Lookup(const SharedIndexReader& r, const std::string& key) {
  std::vector<SharedIndexReader::Entry> out;
  r.Find(IndexKeyHash(key), [&](const SharedIndexReader::Entry& e) {
    out.push_back(e);
    return false;
  });
  return out;
}

TEST(SharedIndexTest, PublishedKeysAreFoundAndUnpublishedOnesAreNot) {
  HeapBuffer m(SharedIndex::BytesFor(64));
  auto w = SharedIndex::Format(m.base, m.size, 64);
  ASSERT_TRUE(w.ok()) << w.status();
  auto r = SharedIndexReader::Open(m.base, m.size);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(Lookup(*r, "a").empty());

  ASSERT_TRUE(w->Publish("a", 1, 4096, 7));
  ASSERT_TRUE(w->Publish("b", 0, 8192, 8));
  auto a = Lookup(*r, "a");
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].location, PackLocation(1, 4096));
  EXPECT_EQ(a[0].generation, 7u);
  EXPECT_EQ(LocationTier(a[0].location), 1u);
  EXPECT_EQ(LocationOffset(a[0].location), 4096u);

  // A newer generation replaces the entry in place.
  ASSERT_TRUE(w->Publish("a", 0, 12288, 9));
  a = Lookup(*r, "a");
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].generation, 9u);
  EXPECT_EQ(w->size(), 2u);

  w->Unpublish("a");
  EXPECT_TRUE(Lookup(*r, "a").empty());
  ASSERT_EQ(Lookup(*r, "b").size(), 1u);
  w->Unpublish("never there");
  EXPECT_EQ(w->size(), 1u);
}

TEST(SharedIndexTest, KeysPastATombstoneStayReachableAndAFullWindowOverflows) {
  // 32 slots, all in one probe window: every key collides with every other.
  HeapBuffer m(SharedIndex::BytesFor(kIndexProbe));
  auto w = SharedIndex::Format(m.base, m.size, kIndexProbe);
  ASSERT_TRUE(w.ok());
  auto r = SharedIndexReader::Open(m.base, m.size);
  ASSERT_TRUE(r.ok());
  for (uint32_t i = 0; i < kIndexProbe; ++i) {
    ASSERT_TRUE(w->Publish("k" + std::to_string(i), 0, 4096 * (i + 1), i + 1)) << i;
  }
  EXPECT_FALSE(w->Publish("one too many", 0, 4096, 99));
  EXPECT_EQ(w->overflows(), 1u);
  EXPECT_TRUE(Lookup(*r, "one too many").empty());
  // Free every other key: the rest are still found, and the freed slots are
  // taken again.
  for (uint32_t i = 0; i < kIndexProbe; i += 2) w->Unpublish("k" + std::to_string(i));
  for (uint32_t i = 1; i < kIndexProbe; i += 2) {
    auto e = Lookup(*r, "k" + std::to_string(i));
    ASSERT_EQ(e.size(), 1u) << i;
    EXPECT_EQ(e[0].generation, i + 1);
  }
  EXPECT_TRUE(w->Publish("one too many", 0, 4096, 99));
  EXPECT_EQ(Lookup(*r, "one too many").size(), 1u);
}

TEST(SharedIndexTest, FormatRefusesBadSizesAndOpenRefusesWhatIsNotAnIndex) {
  HeapBuffer m(SharedIndex::BytesFor(64));
  auto bad = SharedIndex::Format(m.base, m.size, 48);
  EXPECT_THAT(bad.status().message(), HasSubstr("power of two"));
  bad = SharedIndex::Format(m.base, m.size, 128);
  EXPECT_THAT(bad.status().message(), HasSubstr("needs"));

  EXPECT_THAT(SharedIndexReader::Open(m.base, m.size).status().message(), HasSubstr("magic"));
  ASSERT_TRUE(SharedIndex::Format(m.base, m.size, 64).ok());
  EXPECT_THAT(SharedIndexReader::Open(m.base, m.size - 1).status().message(),
              HasSubstr("slots need"));
  m.base[offsetof(IndexHeader, slot_count)] ^= 1;  // corrupt
  EXPECT_THAT(SharedIndexReader::Open(m.base, m.size).status().message(), HasSubstr("checksum"));
  m.base[offsetof(IndexHeader, slot_count)] ^= 1;
  reinterpret_cast<IndexHeader*>(m.base)->version = kIndexVersion + 1;
  EXPECT_THAT(SharedIndexReader::Open(m.base, m.size).status().message(), HasSubstr("version"));
}

TEST(SharedIndexTest, FormattingAgainClearsEveryEntry) {
  HeapBuffer m(SharedIndex::BytesFor(64));
  auto w = SharedIndex::Format(m.base, m.size, 64);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->Publish("a", 0, 4096, 1));
  auto r = SharedIndexReader::Open(m.base, m.size);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(Lookup(*r, "a").size(), 1u);
  ASSERT_TRUE(SharedIndex::Format(m.base, m.size, 64).ok());
  EXPECT_TRUE(Lookup(*r, "a").empty());  // the reader that was open sees it too
}

}  // namespace
}  // namespace cistern::store
