// SharedIndex: the key index in shared memory that lets a client find a key's
// visible generation without asking the daemon (the local fast path, issue
// 13). The daemon is its only writer; every client maps it read-only.
//
// It is a cache, never the truth. A reader that finds nothing, or finds an
// entry that does not check out against the arena (FastLease, below, in
// fast_lease.h), falls back to asking the daemon. So the index may lose keys
// (a full probe window, a torn read it gave up on, a rebuild in progress) but
// every hit is verified before use.
//
// Layout (one file, `index_path`, beside the lease table):
//
//   offset 0     IndexHeader (4 KiB): magic, version, slot count, checksum
//   offset 4096  IndexSlot[slot_count] (32 B each; slot_count a power of 2)
//
// A key lives in one slot within kIndexProbe slots of XXH3-64(key) mod
// slot_count (linear probing); a slot's key_hash is 0 when never used and 1
// when freed (a tombstone: probing goes on past it).
//
// Memory ordering: each slot is a seqlock. The writer makes `seq` odd (relaxed
// store, then a release fence), stores the fields (relaxed atomics) and makes
// `seq` even again (release store). A reader loads `seq` (acquire), skips the
// slot while it is odd, loads the fields (relaxed), issues an acquire fence
// and loads `seq` again: if it changed, the fields may be torn and the reader
// retries. Every word is accessed atomically, so the protocol has no data race
// in the C++ model (and TSan sees none). The writer never waits for readers.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cistern::store {

inline constexpr char kIndexMagic[8] = {'C', 'I', 'S', 'T', 'I', 'D', 'X', '1'};
inline constexpr uint32_t kIndexVersion = 1;
inline constexpr uint32_t kIndexHeaderBytes = 4096;
// How far from its home slot a key may sit. A key that finds no free slot in
// this window is not indexed (its gets take the socket path).
inline constexpr uint32_t kIndexProbe = 32;
inline constexpr uint64_t kIndexEmpty = 0;
inline constexpr uint64_t kIndexTombstone = 1;

struct IndexHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint64_t slot_count;
  uint64_t static_checksum;  // XXH3-64 of the fields above
};
static_assert(sizeof(IndexHeader) <= kIndexHeaderBytes);

struct IndexSlot {
  uint64_t seq;         // odd while the writer is changing the slot
  uint64_t key_hash;    // IndexKeyHash(key); kIndexEmpty or kIndexTombstone
  uint64_t location;    // PackLocation(tier, block offset)
  uint64_t generation;  // the key's visible generation
};
static_assert(sizeof(IndexSlot) == 32);

// A block's place in the host's arenas in one word: tier in the top 8 bits,
// the block offset (below 2^56) in the rest. Never 0 for an object: blocks
// start after the arena's superblock.
constexpr uint64_t PackLocation(uint32_t tier, uint64_t offset) {
  return (uint64_t{tier} << 56) | offset;
}
constexpr uint32_t LocationTier(uint64_t location) { return static_cast<uint32_t>(location >> 56); }
constexpr uint64_t LocationOffset(uint64_t location) {
  return location & ((uint64_t{1} << 56) - 1);
}

// XXH3-64 of the key, moved off the two reserved values.
uint64_t IndexKeyHash(std::string_view key);

// The writer's side (the daemon). Not thread-safe: the ObjectStore serialises
// calls (under its mutex). Readers in other processes may read concurrently.
class SharedIndex {
 public:
  // Bytes an index of `slots` slots needs (slots: a power of two).
  static uint64_t BytesFor(uint64_t slots);
  // Writes an empty index over [base, base + size). InvalidArgument if slots
  // is not a power of two or the region is too small. Readers that had the
  // region mapped see every slot empty or tombstoned, never a torn one.
  // `zeroed`: the slots are known to be zero (a new file, or one whose pages
  // were just dropped), so none is read: a sparse file stays sparse.
  static absl::StatusOr<SharedIndex> Format(char* base, uint64_t size, uint64_t slots,
                                            bool zeroed = false);

  // Makes `key` -> (tier, offset, generation) visible to readers, replacing the
  // key's earlier entry. False (and the key unindexed) if no slot was free in
  // its probe window.
  bool Publish(std::string_view key, uint32_t tier, uint64_t offset, uint64_t generation);
  // Removes the key's entry, if any.
  void Unpublish(std::string_view key);

  uint64_t slot_count() const { return slots_; }
  size_t size() const { return slot_of_.size(); }
  // Keys Publish could not place since Format.
  uint64_t overflows() const { return overflows_; }

 private:
  SharedIndex(char* base, uint64_t slots) : base_(base), slots_(slots) {}
  IndexSlot* slot(uint64_t i) const;
  void Write(uint64_t i, uint64_t key_hash, uint64_t location, uint64_t generation);

  char* base_;
  uint64_t slots_;
  absl::flat_hash_map<std::string, uint64_t> slot_of_;  // indexed key -> its slot
  uint64_t overflows_ = 0;
};

// The reader's side (clients): a read-only mapping of the index.
class SharedIndexReader {
 public:
  // FailedPrecondition (saying why) if the region holds no index of this
  // version or is shorter than its slots.
  static absl::StatusOr<SharedIndexReader> Open(const char* base, uint64_t size);

  struct Entry {
    uint64_t location = 0;
    uint64_t generation = 0;
  };
  // Calls visit(entry) for each consistent slot whose hash is `key_hash`, in
  // probe order, until visit returns true (then Find returns true) or the
  // window ends (false). Hash collisions are the visitor's to rule out: it
  // checks the key in the block's header.
  template <typename Visit>
  bool Find(uint64_t key_hash, Visit&& visit) const {
    for (uint32_t p = 0; p < kIndexProbe; ++p) {
      Entry e;
      uint64_t h = 0;
      if (!Read((key_hash + p) & (slots_ - 1), &h, &e)) continue;
      if (h == kIndexEmpty) return false;
      if (h == key_hash && visit(e)) return true;
    }
    return false;
  }

 private:
  SharedIndexReader(const char* base, uint64_t slots) : base_(base), slots_(slots) {}
  // A consistent snapshot of slot i; false if the writer kept changing it.
  bool Read(uint64_t i, uint64_t* key_hash, Entry* e) const;

  const char* base_;
  uint64_t slots_;
};

}  // namespace cistern::store
