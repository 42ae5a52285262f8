#include "src/store/shared_lease_table.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/units.h"
#include "src/store/checksum.h"
#include "src/store/object_store.h"
#include "src/store/test_arena.h"

namespace cistern::store {
namespace {

using ::testing::HasSubstr;
using Kind = SharedLeaseTable::Kind;
constexpr uint32_t kSlots = 8;
constexpr uint64_t kEntries = 64;

struct TableRegion {
  TableRegion() : size(SharedLeaseTable::BytesFor(kSlots, kEntries)) {
    base = static_cast<char*>(std::aligned_alloc(4096, size));
    std::memset(base, 0xEE, size);  // garbage past the high-water marks must not matter
  }
  ~TableRegion() { std::free(base); }
  char* base;
  uint64_t size;
};

const uint64_t kIds[] = {11, 22};

TEST(SharedLeaseTableTest, WhatIsRecordedIsReadBackAndClearedEntriesAreNot) {
  TableRegion r;
  ASSERT_TRUE(SharedLeaseTable::Format(r.base, r.size, kSlots, kEntries, kIds, 7).ok());
  auto t = SharedLeaseTable::Attach(r.base, r.size, {});
  EXPECT_EQ(t.incarnation(), 8u);
  auto a = t.OpenSlot(101, 4242, 1000, 99);
  auto b = t.OpenSlot(102, 4343, 1000, 98);
  ASSERT_TRUE(a.ok() && b.ok());
  auto e1 = t.AddEntry(*a, Kind::kLease, 1, 5001, 4096, 17);
  auto e2 = t.AddEntry(*a, Kind::kWrite, 0, 6001, 8192, 0);
  auto e3 = t.AddEntry(*b, Kind::kLease, 0, 5002, 4096, 3);
  ASSERT_TRUE(e1.ok() && e2.ok() && e3.ok());
  t.RemoveEntry(*e3);
  t.CloseSlot(*b);
  auto c = SharedLeaseTable::Read(r.base, r.size, kSlots, kEntries, kIds);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->incarnation, 8u);
  ASSERT_EQ(c->sessions.size(), 1u);
  const auto& s = c->sessions[0];
  EXPECT_EQ(s.session_id, 101u);
  EXPECT_EQ(s.pid, 4242);
  EXPECT_EQ(s.pid_start, 99u);
  EXPECT_EQ(s.incarnation, 8u);
  ASSERT_EQ(s.entries.size(), 2u);
  EXPECT_EQ(s.entries[0].kind, Kind::kLease);
  EXPECT_EQ(s.entries[0].tier, 1u);
  EXPECT_EQ(s.entries[0].id, 5001u);
  EXPECT_EQ(s.entries[0].block_offset, 4096u);
  EXPECT_EQ(s.entries[0].generation, 17u);
  EXPECT_EQ(s.entries[1].kind, Kind::kWrite);
  EXPECT_EQ(s.entries[1].id, 6001u);
}

TEST(SharedLeaseTableTest, AttachKeepsOnlyTheSessionsItIsGiven) {
  TableRegion r;
  ASSERT_TRUE(SharedLeaseTable::Format(r.base, r.size, kSlots, kEntries, kIds, 1).ok());
  {
    auto t = SharedLeaseTable::Attach(r.base, r.size, {});
    for (uint64_t id = 1; id <= 3; ++id) {
      auto slot = t.OpenSlot(id, static_cast<int32_t>(id), 0, 0);
      ASSERT_TRUE(slot.ok());
      ASSERT_TRUE(t.AddEntry(*slot, Kind::kLease, 0, id * 100, id * 64, 1).ok());
    }
  }
  auto c = SharedLeaseTable::Read(r.base, r.size, kSlots, kEntries, kIds);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->sessions.size(), 3u);
  std::vector<SharedLeaseTable::Session> keep = {c->sessions[1]};
  auto t = SharedLeaseTable::Attach(r.base, r.size, keep);
  EXPECT_EQ(t.used_slots(), 1u);
  EXPECT_EQ(t.used_entries(), 1u);
  // The freed slots and entries are handed out again; the kept ones are not.
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(t.OpenSlot(50 + i, 1, 0, 0).ok());
  EXPECT_EQ(t.OpenSlot(99, 1, 0, 0).status().code(), absl::StatusCode::kResourceExhausted);
  auto again = SharedLeaseTable::Read(r.base, r.size, kSlots, kEntries, kIds);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->sessions.size(), 8u);
  int with_entries = 0;
  for (const auto& s : again->sessions) {
    if (!s.entries.empty()) {
      ++with_entries;
      EXPECT_EQ(s.session_id, 2u);
      EXPECT_EQ(s.entries[0].id, 200u);
    }
  }
  EXPECT_EQ(with_entries, 1);
}

TEST(SharedLeaseTableTest, AFullTableIsResourceExhaustedNamingTheLimit) {
  TableRegion r;
  ASSERT_TRUE(SharedLeaseTable::Format(r.base, r.size, kSlots, kEntries, kIds, 1).ok());
  auto t = SharedLeaseTable::Attach(r.base, r.size, {});
  auto slot = t.OpenSlot(1, 1, 0, 0);
  for (uint64_t i = 0; i < kEntries; ++i)
    ASSERT_TRUE(t.AddEntry(*slot, Kind::kLease, 0, i + 1, 0, 1).ok());
  auto full = t.AddEntry(*slot, Kind::kLease, 0, 999, 0, 1);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("max_leases"));
}

TEST(SharedLeaseTableTest, ATableForOtherArenasOrDimensionsIsNotTrusted) {
  TableRegion r;
  ASSERT_TRUE(SharedLeaseTable::Format(r.base, r.size, kSlots, kEntries, kIds, 1).ok());
  const uint64_t other[] = {11, 23};
  EXPECT_THAT(SharedLeaseTable::Read(r.base, r.size, kSlots, kEntries, other).status().message(),
              HasSubstr("other arenas"));
  EXPECT_EQ(SharedLeaseTable::Read(r.base, r.size, kSlots + 1, kEntries, kIds).status().code(),
            absl::StatusCode::kFailedPrecondition);
  r.base[20] ^= 1;  // a header field
  EXPECT_EQ(SharedLeaseTable::Read(r.base, r.size, kSlots, kEntries, kIds).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::memset(r.base, 0, 8);
  EXPECT_THAT(SharedLeaseTable::Read(r.base, r.size, kSlots, kEntries, kIds).status().message(),
              HasSubstr("bad magic"));
}

// A store over one heap arena and a heap lease table, where Restart() drops
// the store as a kill -9 of the daemon would and opens it again with the
// sessions whose holders "live" (all of them, unless told otherwise).
class SurvivalHarness {
 public:
  SurvivalHarness() : arena_(4 * kMiB) {
    uint64_t id = Identity();
    EXPECT_TRUE(
        SharedLeaseTable::Format(table_.base, table_.size, kSlots, kEntries, {&id, 1}, 1).ok());
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
    StoreOptions o;
    o.shared_leases = shared_.get();
    o.recovered = std::move(recovered);
    auto s = ObjectStore::Open({{"mem", arena_.base(), arena_.size()}}, o, &report_);
    if (!s.ok()) return s.status();
    store_ = std::move(*s);
    return absl::OkStatus();
  }
  // Kill -9 and restart; sessions in `dead` have no living holder.
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
  absl::StatusOr<uint64_t> Put(SessionId s, std::string_view key, std::string_view value) {
    ObjectStore::CreateArgs args;
    args.key = key;
    args.size = value.size();
    auto w = store_->Create(s, args);
    if (!w.ok()) return w.status();
    uint64_t sum = CopyAndChecksum(arena_.base() + w->payload_offset, value.data(), value.size());
    return store_->Seal(s, w->write_id, sum);
  }
  std::string Bytes(const ObjectStore::LeaseInfo& l) {
    return std::string(arena_.base() + l.payload_offset, l.size);
  }
  ObjectStore& store() { return *store_; }
  SharedLeaseTable& shared() { return *shared_; }
  const RecoveryReport& report() const { return report_; }
  static constexpr SessionId kRecoveredBase = SessionId{1} << 61;

 private:
  TestRegion arena_;
  TableRegion table_;
  std::unique_ptr<SharedLeaseTable> shared_;
  std::unique_ptr<ObjectStore> store_;
  RecoveryReport report_;
};

// A view held across a daemon restart read another key's bytes: the leases
// died with the daemon and the restarted one reused the block (issue 9, 2).
TEST(LeaseSurvivalTest, ALeaseOfALivingHolderKeepsItsBlockAcrossARestart) {
  SurvivalHarness h;
  ASSERT_TRUE(h.store().OpenSession(1, {4242, 1000, 7}).ok());
  ASSERT_TRUE(h.Put(1, "k", std::string(1000, 'k')).ok());
  auto view = h.store().Get(1, "k", 0);
  ASSERT_TRUE(view.ok());
  ASSERT_TRUE(h.Restart().ok());
  EXPECT_EQ(h.report().kept_leases, 1u);
  // The restarted daemon: the key is re-put and other keys fill the tier.
  ASSERT_TRUE(h.Put(2, "k", std::string(1000, 'n')).ok());
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(h.Put(2, "other" + std::to_string(i), std::string(1000, 'o')).ok());
  EXPECT_EQ(h.Bytes(*view), std::string(1000, 'k'));
  EXPECT_EQ(h.store().Stats().deferred_frees, 1u);
  // The reconnected holder adopts its leases and releases them under the old id.
  auto adopted = h.store().AdoptSession(SurvivalHarness::kRecoveredBase + 1, 3);
  EXPECT_EQ(adopted.leases, 1u);
  EXPECT_EQ(h.store().Release(3, view->lease_id).code(), absl::StatusCode::kOk);
  EXPECT_EQ(h.store().Stats().deferred_frees, 0u);
  EXPECT_EQ(h.store().Stats().leases, 0u);
}

TEST(LeaseSurvivalTest, LeasesOfADeadHolderAreFreedAtRestart) {
  SurvivalHarness h;
  ASSERT_TRUE(h.store().OpenSession(1, {4242, 1000, 7}).ok());
  ASSERT_TRUE(h.Put(1, "k", "v").ok());
  ASSERT_TRUE(h.store().Get(1, "k", 0).ok());
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  ASSERT_TRUE(h.Restart({1}).ok());
  EXPECT_EQ(h.report().kept_leases, 0u);
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, 0u);
  EXPECT_EQ(h.shared().used_entries(), 0u);
  EXPECT_EQ(h.shared().used_slots(), 0u);
}

TEST(LeaseSurvivalTest, TheRecoveredSessionEndingFreesWhatItKept) {
  SurvivalHarness h;
  ASSERT_TRUE(h.store().OpenSession(1, {4242, 1000, 7}).ok());
  ASSERT_TRUE(h.Put(1, "k", "v").ok());
  ASSERT_TRUE(h.store().Get(1, "k", 0).ok());
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  ASSERT_TRUE(h.Restart().ok());
  EXPECT_GT(h.store().Stats().tiers[0].used_bytes, 0u);
  h.store().CloseSession(SurvivalHarness::kRecoveredBase + 1);  // the holder exited
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, 0u);
  EXPECT_EQ(h.shared().used_entries(), 0u);
  EXPECT_EQ(h.shared().used_slots(), 0u);
}

TEST(LeaseSurvivalTest, AWriteOpenAcrossARestartIsKeptAndItsSealIsAborted) {
  SurvivalHarness h;
  ASSERT_TRUE(h.store().OpenSession(1, {4242, 1000, 7}).ok());
  ObjectStore::CreateArgs args;
  args.key = "w";
  args.size = 5000;
  auto w = h.store().Create(1, args);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(h.Restart().ok());
  EXPECT_EQ(h.report().kept_writes, 1u);
  uint64_t used = h.store().Stats().tiers[0].used_bytes;
  EXPECT_GE(used, 5000u);
  ASSERT_TRUE(h.store().OpenSession(2, {4242, 1000, 7}).ok());
  EXPECT_EQ(h.store().AdoptSession(SurvivalHarness::kRecoveredBase + 1, 2).writes, 1u);
  auto sealed = h.store().Seal(2, w->write_id, std::nullopt);
  EXPECT_EQ(sealed.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(sealed.status().message(), HasSubstr("restarted"));
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, 0u);
  EXPECT_EQ(h.store().Get(2, "w", 0).status().code(), absl::StatusCode::kNotFound);
}

// A client may be writing into its reserved write space when the daemon
// dies: the restarted daemon must not hand those bytes to anyone else.
TEST(LeaseSurvivalTest, AnExtentOfALivingHolderIsKeptAcrossARestartAndThenDropped) {
  SurvivalHarness h;
  ASSERT_TRUE(h.store().OpenSession(1, {4242, 1000, 7}).ok());
  auto e = h.store().ReserveExtent(1, 0, 256 * 1024);
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_TRUE(h.Restart().ok());
  EXPECT_EQ(h.report().kept_writes, 1u);
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, 256u * 1024);
  // Others fill the tier; the client goes on writing its extent meanwhile.
  for (int i = 0; h.Put(2, "o" + std::to_string(i), std::string(10000, 'o')).ok(); ++i) {
  }
  EXPECT_EQ(h.store().Stats().tiers[0].evictions, 0u);
  ASSERT_TRUE(h.store().OpenSession(3, {4242, 1000, 7}).ok());
  EXPECT_EQ(h.store().AdoptSession(SurvivalHarness::kRecoveredBase + 1, 3).writes, 1u);
  // Its put is refused (its bytes may predate the restart) and the space freed.
  std::vector<ObjectStore::ExtentPut> puts(1);
  puts[0].args.key = "k";
  puts[0].args.size = 100;
  auto r = h.store().PutExtent(3, e->id, puts);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("restarted"));
  EXPECT_EQ(h.store().Get(3, "k", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.store().Stats().reserved_extents, 0u);
  // And the session may hold a new one, once there is room for it.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(h.store().Remove("o" + std::to_string(i), 0).ok());
  EXPECT_TRUE(h.store().ReserveExtent(3, 0, 64 * 1024).ok());
}

TEST(LeaseSurvivalTest, AnExtentOfADeadHolderIsFreedAtRestart) {
  SurvivalHarness h;
  ASSERT_TRUE(h.store().OpenSession(1, {4242, 1000, 7}).ok());
  ASSERT_TRUE(h.store().ReserveExtent(1, 0, 256 * 1024).ok());
  ASSERT_TRUE(h.Restart({1}).ok());
  EXPECT_EQ(h.store().Stats().tiers[0].used_bytes, 0u);
  EXPECT_EQ(h.shared().used_entries(), 0u);
}

TEST(LeaseSurvivalTest, ASecondRestartBeforeTheHolderReconnectsStillKeepsTheBlock) {
  SurvivalHarness h;
  ASSERT_TRUE(h.store().OpenSession(1, {4242, 1000, 7}).ok());
  ASSERT_TRUE(h.Put(1, "k", std::string(500, 'k')).ok());
  auto view = h.store().Get(1, "k", 0);
  ASSERT_TRUE(h.store().Remove("k", 0).ok());
  ASSERT_TRUE(h.Restart().ok());
  ASSERT_TRUE(h.Restart().ok());
  EXPECT_EQ(h.report().kept_leases, 1u);
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(h.Put(2, "o" + std::to_string(i), std::string(500, 'o')).ok());
  EXPECT_EQ(h.Bytes(*view), std::string(500, 'k'));
}

TEST(LeaseSurvivalTest, AnEntryThatNoLongerMatchesItsBlockIsCleared) {
  SurvivalHarness h;
  ASSERT_TRUE(h.store().OpenSession(1, {4242, 1000, 7}).ok());
  ASSERT_TRUE(h.Put(1, "k", "v").ok());
  auto view = h.store().Get(1, "k", 0);
  ASSERT_TRUE(view.ok());
  // The entry claims another generation (as if the block had been reused
  // after a crash between clearing and writing).
  ASSERT_TRUE(h.store().Release(1, view->lease_id).ok());
  ASSERT_TRUE(h.shared().AddEntry(0, Kind::kLease, 0, 77, view->block_offset, 9999).ok());
  ASSERT_TRUE(h.Restart().ok());
  EXPECT_EQ(h.report().stale_entries, 1u);
  EXPECT_EQ(h.report().kept_leases, 0u);
  EXPECT_EQ(h.shared().used_entries(), 0u);
}

TEST(LeaseSurvivalTest, LeaseIdsDoNotRepeatAcrossRestarts) {
  SurvivalHarness h;
  auto a = h.Put(1, "k", "v");
  ASSERT_TRUE(a.ok());
  auto first = h.store().Get(1, "k", 0);
  ASSERT_TRUE(h.Restart().ok());
  auto second = h.store().Get(1, "k", 0);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first->lease_id, second->lease_id);
}

}  // namespace
}  // namespace cistern::store
