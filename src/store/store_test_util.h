// Test helpers over an ObjectStore backed by heap arenas.
#pragma once

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "src/store/checksum.h"
#include "src/store/object_store.h"
#include "src/store/test_arena.h"

namespace cistern::store {

class StoreHarness {
 public:
  explicit StoreHarness(uint64_t arena_bytes, double high = 0.95, double low = 0.85)
      : region_(std::make_unique<TestRegion>(arena_bytes)), high_(high), low_(low) {
    EXPECT_TRUE(Reopen().ok());
  }

  // Drops the store without closing sessions, as a kill -9 would, and opens
  // it again over the same memory.
  absl::Status Reopen(Arena::OnCorrupt on_corrupt = Arena::OnCorrupt::kQuarantine) {
    store_.reset();
    TierSpec spec{region_->tier(), region_->base(), region_->size(), high_, low_};
    StoreOptions opts;
    opts.on_corrupt = on_corrupt;
    auto s = ObjectStore::Open({spec}, opts, &report_);
    if (!s.ok()) return s.status();
    store_ = std::move(*s);
    return absl::OkStatus();
  }

  ObjectStore& store() { return *store_; }
  char* base() { return region_->base(); }
  const RecoveryReport& report() const { return report_; }

  absl::StatusOr<uint64_t> Put(SessionId s, std::string_view key, std::string_view value,
                               bool evictable = false, bool if_absent = false) {
    ObjectStore::CreateArgs args;
    args.key = key;
    args.size = value.size();
    args.evictable = evictable;
    args.if_absent = if_absent;
    auto w = store_->Create(s, args);
    if (!w.ok()) return w.status();
    uint64_t sum = CopyAndChecksum(base() + w->payload_offset, value.data(), value.size());
    return store_->Seal(s, w->write_id, sum);
  }

  // Flips one payload byte of the visible generation of `key` behind the
  // store's back, as a stray write through a writable mapping would: the
  // object fails verification at the next Reopen.
  void CorruptForTest(std::string_view key) {
    auto l = store_->Get(0, key, 0);
    ASSERT_TRUE(l.ok()) << l.status();
    base()[l->payload_offset] ^= 0x5a;
    ASSERT_TRUE(store_->Release(0, l->lease_id).ok());
  }

  // Reads the bytes a lease points at.
  std::string Bytes(const ObjectStore::LeaseInfo& l) {
    return std::string(base() + l.payload_offset, l.size);
  }

  absl::StatusOr<std::string> GetValue(SessionId s, std::string_view key, uint64_t gen = 0) {
    auto l = store_->Get(s, key, gen);
    if (!l.ok()) return l.status();
    std::string v = Bytes(*l);
    EXPECT_TRUE(store_->Release(s, l->lease_id).ok());
    return v;
  }

 private:
  std::unique_ptr<TestRegion> region_;
  double high_, low_;
  std::unique_ptr<ObjectStore> store_;
  RecoveryReport report_;
};

}  // namespace cistern::store
