// The ObjectStore's side of the local fast path: the shared index follows
// what is visible, and a block a client protects with a fast lease is not
// freed (nor evicted from under it) until the lease ends, across restarts.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/units.h"
#include "src/store/checksum.h"
#include "src/store/fast_lease.h"
#include "src/store/object_store.h"
#include "src/store/shared_index.h"
#include "src/store/shared_lease_table.h"
#include "src/store/test_arena.h"

namespace cistern::store {
namespace {

constexpr uint32_t kSlots = 8;
constexpr uint64_t kEntries = 64;
constexpr uint64_t kIndexSlots = 256;

// A store with the fast path over heap memory. Restart() drops the store as
// a kill -9 of the daemon would and opens it again, as cisternd does: the
// lease table and the fast lease regions are read back, the index rebuilt.
class FastHarness {
 public:
  explicit FastHarness(uint64_t arena_bytes = 4 * kMiB, double high = 0.95, double low = 0.85)
      : arena_(arena_bytes),
        table_(SharedLeaseTable::BytesFor(kSlots, kEntries)),
        index_mem_(SharedIndex::BytesFor(kIndexSlots)),
        fast_mem_(FastLeaseRegions::BytesFor(kSlots)),
        high_(high),
        low_(low) {
    uint64_t id = Identity();
    EXPECT_TRUE(
        SharedLeaseTable::Format(table_.base, table_.size, kSlots, kEntries, {&id, 1}, 1).ok());
    auto f = FastLeaseRegions::Format(fast_mem_.base, fast_mem_.size, kSlots);
    EXPECT_TRUE(f.ok());
    EXPECT_TRUE(Open({}).ok());
  }
  uint64_t Identity() const {
    return reinterpret_cast<const Superblock*>(arena_.base())->static_checksum;
  }
  absl::Status Open(std::vector<RecoveredSession> recovered) {
    std::vector<SharedLeaseTable::Session> keep;
    for (const auto& r : recovered) keep.push_back(r.shared);
    shared_ = std::make_unique<SharedLeaseTable>(
        SharedLeaseTable::Attach(table_.base, table_.size, keep));
    auto index = SharedIndex::Format(index_mem_.base, index_mem_.size, kIndexSlots);
    if (!index.ok()) return index.status();
    index_ = std::make_unique<SharedIndex>(*index);
    auto fast = FastLeaseRegions::Open(fast_mem_.base, fast_mem_.size, kSlots);
    if (!fast.ok()) return fast.status();
    fast_ = std::make_unique<FastLeaseRegions>(*fast);
    StoreOptions o;
    o.shared_leases = shared_.get();
    o.recovered = std::move(recovered);
    o.index = index_.get();
    o.fast_leases = fast_.get();
    o.process_lives = [this](int32_t pid, uint64_t) { return !dead_.contains(pid); };
    auto s = ObjectStore::Open({{"mem", arena_.base(), arena_.size(), high_, low_}}, o, &report_);
    if (!s.ok()) return s.status();
    store_ = std::move(*s);
    return absl::OkStatus();
  }
  absl::Status Restart(std::vector<uint64_t> dead = {}) {
    store_.reset();
    uint64_t id = Identity();
    auto c = SharedLeaseTable::Read(table_.base, table_.size, kSlots, kEntries, {&id, 1});
    if (!c.ok()) return c.status();
    std::vector<RecoveredSession> recovered;
    for (auto& s : c->sessions) {
      if (std::find(dead.begin(), dead.end(), s.session_id) != dead.end()) continue;
      recovered.push_back({kRecoveredBase + s.session_id, s});
    }
    return Open(std::move(recovered));
  }

  absl::StatusOr<uint64_t> Put(SessionId s, std::string_view key, std::string_view value,
                               bool evictable = false) {
    ObjectStore::CreateArgs args;
    args.key = key;
    args.size = value.size();
    args.evictable = evictable;
    auto w = store_->Create(s, args);
    if (!w.ok()) return w.status();
    uint64_t sum = CopyAndChecksum(arena_.base() + w->payload_offset, value.data(), value.size());
    return store_->Seal(s, w->write_id, sum);
  }

  // A client of `session` in process `pid`: its region of fast lease slots
  // (`hint`: the one it had before).
  std::unique_ptr<FastSlots> Client(SessionId session, int32_t pid = 4242,
                                    std::optional<uint32_t> hint = std::nullopt,
                                    uint32_t* region = nullptr) {
    EXPECT_TRUE(store_->OpenSession(session, {pid, 1000, 7}).ok());
    auto r = store_->OpenFastPath(session, {pid, 1000, 7}, hint);
    EXPECT_TRUE(r.ok()) << r.status();
    if (region) *region = *r;
    return std::make_unique<FastSlots>(fast_->region(*r));
  }
  // The process `pid` exits (as the daemon's liveness check will see).
  void Exit(int32_t pid) { dead_.insert(pid); }
  // A get with no round trip: false when the client would take the socket.
  bool FastGet(FastSlots& c, std::string_view key, FastHit* hit) {
    auto reader = SharedIndexReader::Open(index_mem_.base, index_mem_.size);
    EXPECT_TRUE(reader.ok());
    auto slot = c.Take();
    if (!slot) return false;
    const ArenaMap map{arena_.base(), arena_.size()};
    if (TryAcquire(*reader, {&map, 1}, c.slots(), *slot, key, hit)) return true;
    c.Give(*slot);
    return false;
  }
  void Release(FastSlots& c, const FastHit& hit) {
    store::Release(c.slots()[hit.slot]);
    c.Give(hit.slot);
  }
  std::string Bytes(const FastHit& hit) const {
    const char* block = arena_.base() + hit.block_offset;
    return std::string(block + hit.header->payload_offset, hit.header->payload_size);
  }
  uint64_t used() { return store_->Stats().tiers[0].used_bytes; }

  ObjectStore& store() { return *store_; }
  SharedLeaseTable& shared() { return *shared_; }
  const RecoveryReport& report() const { return report_; }
  static constexpr SessionId kRecoveredBase = SessionId{1} << 61;

 private:
  TestRegion arena_;
  HeapBuffer table_, index_mem_, fast_mem_;
  absl::flat_hash_set<int32_t> dead_;
  double high_, low_;
  std::unique_ptr<SharedLeaseTable> shared_;
  std::unique_ptr<SharedIndex> index_;
  std::unique_ptr<FastLeaseRegions> fast_;
  std::unique_ptr<ObjectStore> store_;
  RecoveryReport report_;
};

TEST(FastPathStoreTest, TheIndexFollowsWhatIsVisible) {
  FastHarness h;
  auto c = h.Client(1);
  FastHit hit;
  EXPECT_FALSE(h.FastGet(*c, "k", &hit));
  auto g1 = h.Put(1, "k", "one");
  ASSERT_TRUE(g1.ok());
  ASSERT_TRUE(h.FastGet(*c, "k", &hit));
  EXPECT_EQ(hit.generation, *g1);
  EXPECT_EQ(h.Bytes(hit), "one");
  // Reports count fast leases like any other.
  FastHit again;
  ASSERT_TRUE(h.FastGet(*c, "k", &again));
  EXPECT_EQ(h.store().Stat("k")->leases, 2u);
  EXPECT_EQ(h.store().List("", 10, "").objects.at(0).leases, 2u);
  EXPECT_EQ(h.store().Stats().leases, 2u);
  EXPECT_EQ(h.store().Stats().fast_leases, 2u);
  EXPECT_EQ(h.store().SessionInfo(1).leases, 2u);
  h.Release(*c, again);
  h.Release(*c, hit);
  EXPECT_EQ(h.store().Stat("k")->leases, 0u);
  auto g2 = h.Put(1, "k", "two");
  ASSERT_TRUE(g2.ok());
  ASSERT_TRUE(h.FastGet(*c, "k", &hit));
  EXPECT_EQ(hit.generation, *g2);
  EXPECT_EQ(h.Bytes(hit), "two");
  h.Release(*c, hit);
  EXPECT_EQ(h.store().Stats().indexed, 1u);
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  EXPECT_FALSE(h.FastGet(*c, "k", &hit));
  EXPECT_EQ(h.store().Stats().indexed, 0u);
}

TEST(FastPathStoreTest, AFastLeaseKeepsItsBlockThroughOverwriteAndRemove) {
  FastHarness h;
  auto c = h.Client(1);
  ASSERT_TRUE(h.Put(1, "k", std::string(1000, 'a')).ok());
  const uint64_t baseline = h.used();
  FastHit hit;
  ASSERT_TRUE(h.FastGet(*c, "k", &hit));
  ASSERT_TRUE(h.Put(1, "k", std::string(1000, 'b')).ok());
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(h.Put(1, "other" + std::to_string(i), std::string(1000, 'o')).ok());
    ASSERT_TRUE(h.store().Remove("other" + std::to_string(i), 0).ok());
  }
  EXPECT_EQ(h.Bytes(hit), std::string(1000, 'a'));
  EXPECT_EQ(h.store().Stats().fast_held, 1u);
  EXPECT_EQ(h.store().Stats().deferred_frees, 1u);
  EXPECT_EQ(h.used(), baseline);  // only the leased block
  h.store().ReclaimFastHeld();
  EXPECT_EQ(h.store().Stats().fast_held, 1u);  // still leased
  h.Release(*c, hit);
  h.store().ReclaimFastHeld();
  EXPECT_EQ(h.store().Stats().fast_held, 0u);
  EXPECT_EQ(h.store().Stats().deferred_frees, 0u);
  EXPECT_EQ(h.used(), 0u);
}

TEST(FastPathStoreTest, ACreateWithNoRoomFreesReleasedBlocksFirst) {
  FastHarness h(64 * kKiB);
  auto c = h.Client(1);
  ASSERT_TRUE(h.Put(1, "big", std::string(40 * kKiB, 'a')).ok());
  FastHit hit;
  ASSERT_TRUE(h.FastGet(*c, "big", &hit));
  ASSERT_TRUE(h.store().Remove("big", 0).ok());
  h.Release(*c, hit);  // the daemon has not looked since
  EXPECT_EQ(h.store().Stats().fast_held, 1u);
  EXPECT_TRUE(h.Put(1, "big2", std::string(40 * kKiB, 'b')).ok());
  EXPECT_EQ(h.store().Stats().fast_held, 0u);
}

TEST(FastPathStoreTest, EvictionPassesOverObjectsReadThroughFastLeases) {
  FastHarness h(256 * kKiB, 1.0, 1.0);
  auto c = h.Client(1);
  ASSERT_TRUE(h.Put(1, "hot", std::string(30 * kKiB, 'h'), /*evictable=*/true).ok());
  FastHit hit;
  ASSERT_TRUE(h.FastGet(*c, "hot", &hit));
  // "hot" is the least recently used; filling the tier evicts others.
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(h.Put(1, "cold" + std::to_string(i), std::string(30 * kKiB, 'c'), true).ok());
  }
  EXPECT_GT(h.store().Stats().tiers[0].evictions, 0u);
  EXPECT_TRUE(h.store().Stat("hot").ok());
  EXPECT_EQ(h.Bytes(hit), std::string(30 * kKiB, 'h'));
  h.Release(*c, hit);
}

// A session that ends (the daemon closed it, or the socket broke) leaves its
// region to its process, which may still hold and end leases there; only
// the process's exit frees it.
TEST(FastPathStoreTest, AnEndedSessionsRegionStaysWithItsProcessUntilItExits) {
  FastHarness h;
  uint32_t r = 0;
  auto c = h.Client(1, 4242, std::nullopt, &r);
  ASSERT_TRUE(h.Put(1, "k", "v").ok());
  FastHit hit;
  ASSERT_TRUE(h.FastGet(*c, "k", &hit));
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  h.store().CloseSession(1);
  h.store().ReapFastRegions();
  EXPECT_GT(h.used(), 0u);  // the process lives: its lease holds
  EXPECT_EQ(h.Bytes(hit), "v");
  // Another process never gets that region, even when it asks for it.
  uint32_t other = 0;
  auto c2 = h.Client(2, 5555, r, &other);
  EXPECT_NE(other, r);
  // The process reconnects and asks for its region back: it gets it.
  uint32_t again = 0;
  auto c3 = h.Client(3, 4242, r, &again);
  EXPECT_EQ(again, r);
  h.store().CloseSession(3);
  EXPECT_EQ(h.store().Stats().fast_leases, 1u);
  h.Exit(4242);                                  // killed while holding the lease
  EXPECT_EQ(h.store().Stats().fast_leases, 0u);  // not counted, even before the reaping
  h.store().ReapFastRegions();
  EXPECT_EQ(h.used(), 0u);
  EXPECT_EQ(h.store().Stats().fast_held, 0u);
  EXPECT_EQ(c->slots()[hit.slot].location, 0u);  // the region was cleared
  // And it is free for any process now.
  uint32_t reused = 0;
  auto c4 = h.Client(4, 6666, std::nullopt, &reused);
  EXPECT_EQ(reused, r);
}

TEST(FastPathStoreTest, ARegionItsClientIsDoneWithIsFreedWhenTheSessionEnds) {
  FastHarness h;
  uint32_t r = 0;
  auto c = h.Client(1, 4242, std::nullopt, &r);
  ASSERT_TRUE(h.Put(1, "k", "v").ok());
  FastHit hit;
  ASSERT_TRUE(h.FastGet(*c, "k", &hit));
  h.Release(*c, hit);
  h.store().FastPathDone(1);
  h.store().CloseSession(1);
  uint32_t next = 0;
  auto c2 = h.Client(2, 5555, std::nullopt, &next);
  EXPECT_EQ(next, r);  // free at once, though 4242 lives
  // Done, but still holding a lease (a client bug): kept.
  ASSERT_TRUE(h.FastGet(*c2, "k", &hit));
  h.store().FastPathDone(2);
  h.store().CloseSession(2);
  uint32_t third = 0;
  auto c3 = h.Client(3, 6666, std::nullopt, &third);
  EXPECT_NE(third, r);
}

// A view taken on the fast path and held across a kill -9 of the daemon
// keeps its bytes; the reconnected client gets its region back and ends the
// lease there.
TEST(FastPathStoreTest, AFastLeaseOfALivingHolderKeepsItsBlockAcrossARestart) {
  FastHarness h;
  uint32_t r = 0;
  auto c = h.Client(1, 4242, std::nullopt, &r);
  ASSERT_TRUE(h.Put(1, "k", std::string(1000, 'k')).ok());
  FastHit hit;
  ASSERT_TRUE(h.FastGet(*c, "k", &hit));
  ASSERT_TRUE(h.store().Remove("k", 0).ok());  // retired, kept for the lease
  ASSERT_TRUE(h.Restart().ok());
  EXPECT_GT(h.used(), 0u);
  EXPECT_EQ(h.store().Stats().fast_held, 1u);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(h.Put(2, "o" + std::to_string(i), "xyz").ok());
  EXPECT_EQ(h.Bytes(hit), std::string(1000, 'k'));
  uint32_t again = 0;
  auto c3 = h.Client(3, 4242, r, &again);
  EXPECT_EQ(again, r);
  h.store().ReclaimFastHeld();
  EXPECT_EQ(h.store().Stats().fast_held, 1u);
  h.Release(*c, hit);
  h.store().ReclaimFastHeld();
  EXPECT_EQ(h.store().Stats().fast_held, 0u);
}

TEST(FastPathStoreTest, TheFastLeasesOfADeadHolderAreFreedAtRestart) {
  FastHarness h;
  auto c = h.Client(1);
  ASSERT_TRUE(h.Put(1, "k", "v").ok());
  FastHit hit;
  ASSERT_TRUE(h.FastGet(*c, "k", &hit));
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  h.Exit(4242);
  ASSERT_TRUE(h.Restart({1}).ok());
  EXPECT_EQ(h.used(), 0u);
  EXPECT_EQ(h.store().Stats().fast_held, 0u);
  EXPECT_EQ(c->slots()[hit.slot].location, 0u);  // its region was cleared
}

TEST(FastPathStoreTest, RegionsRunOutWithAClearError) {
  FastHarness h;
  // Eight processes took regions; their sessions ended but they live on.
  for (int32_t p = 0; p < static_cast<int32_t>(kSlots); ++p) {
    h.Client(10 + p, 100 + p);
    h.store().CloseSession(10 + p);
  }
  ASSERT_TRUE(h.store().OpenSession(99, {999, 1000, 7}).ok());
  auto r = h.store().OpenFastPath(99, {999, 1000, 7});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("8 fast lease regions"));
  h.Exit(103);
  h.store().ReapFastRegions();
  EXPECT_TRUE(h.store().OpenFastPath(99, {999, 1000, 7}).ok());
}

TEST(FastPathStoreTest, OpenFastPathNeedsAFastPath) {
  TestRegion arena(1 * kMiB);
  auto plain = ObjectStore::Open({{"mem", arena.base(), arena.size()}}, {}, nullptr);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->OpenFastPath(1, {1, 1, 1}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  StoreOptions half;
  HeapBuffer index_mem(SharedIndex::BytesFor(16));
  auto index = SharedIndex::Format(index_mem.base, index_mem.size, 16);
  ASSERT_TRUE(index.ok());
  half.index = &*index;  // without the regions
  TestRegion arena2(1 * kMiB);
  EXPECT_EQ(
      ObjectStore::Open({{"mem", arena2.base(), arena2.size()}}, half, nullptr).status().code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cistern::store
