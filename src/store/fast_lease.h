// Fast leases: a client takes a lease on a sealed object without a round trip
// (the local fast path, issue 13), and the daemon never frees a block one
// protects.
//
// Each session owns a region of FastLease slots in shared memory, which only
// that client writes (the daemon clears it when the session ends). A slot
// names one block and generation (location 0: free). The protocol is that of
// hazard pointers:
//
//   client (TryAcquire)                      daemon (retiring a block)
//   1. find (location, generation) in the    1. store the object's state
//      SharedIndex                              kRemoved (or evict it)
//   2. store the slot's generation, then     2. seq_cst fence
//      its location (relaxed)                3. load every session's slots
//   3. seq_cst fence                            (CollectFastLeases)
//   4. load the block's tag, state,          4. free the block only if no slot
//      generation and key; use the block        names its location; else keep
//      only if it is this key's sealed          it and look again later
//      generation
//
// Why no block is freed under a reader: the two fences are in one total order
// S. If the client's fence comes first in S, the daemon's loads in step 3 see
// the client's slot (or a later value of it: the slot is only cleared by the
// client after it stopped reading), so the block is kept. If the daemon's
// fence comes first, the client's load of the state in step 4 sees kRemoved
// (or a later state), so the client gives up and the block is not used. A
// state goes from kSealed to another value only by the daemon's step 1, and a
// block is reused only after step 4, so while the slot stays published and
// step 4 of the client passed, the block holds the key's sealed bytes.
//
// The daemon matches slots by location alone, whatever generation they name:
// a slot naming a stale generation of a block only delays its free until the
// client lets go (at once, since its check fails). Matching the (location,
// generation) pair would be a data race in the C++ model: the daemon could
// read a slot's old location and the generation of the client's next lease,
// see no match, and free the block with no happens-before edge from the
// client's reads of it (TSan found this in the thread stress test). Reading
// the location alone, with acquire, the daemon either sees the lease (and
// keeps the block) or a later store, which was a release after those reads.
//
// Every word is read and written through std::atomic_ref, so the protocol has
// no data race in the C++ model. Reads of the header before the check passes
// may see a block being reused; they are bounds-checked and only compared.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "src/store/layout.h"
#include "src/store/shared_index.h"

namespace cistern::store {

struct FastLease {
  uint64_t location;    // PackLocation(tier, block offset); 0: free
  uint64_t generation;  // the generation the lease protects
};
static_assert(sizeof(FastLease) == 16);

// One arena as a client maps it.
struct ArenaMap {
  const char* base = nullptr;
  uint64_t size = 0;
};

// What TryAcquire found.
struct FastHit {
  uint32_t slot = 0;  // the FastLease slot holding the lease
  uint32_t tier = 0;
  uint64_t block_offset = 0;
  uint64_t generation = 0;
  const ObjectHeader* header = nullptr;  // in the arena's mapping
};

// Checks that the block at `location` in `arenas` is `key`'s sealed object of
// `generation`: its tag, magic, state, generation, key and the payload's
// bounds. Reads every changing word atomically.
const ObjectHeader* CheckSealed(std::span<const ArenaMap> arenas, uint64_t location,
                                uint64_t generation, std::string_view key);

// The client's side: finds `key` in `index` and protects it with the free
// slot `slot` of `leases`. On success the slot stays published until
// Release(leases[slot]); on failure (the key is not indexed, or changed under
// the reader) the slot is left free and the caller takes the socket path.
bool TryAcquire(const SharedIndexReader& index, std::span<const ArenaMap> arenas,
                std::span<FastLease> leases, uint32_t slot, std::string_view key, FastHit* hit);

// Ends the lease in `lease`: after this the daemon may free the block.
inline void Release(FastLease& lease) {
  std::atomic_ref<uint64_t>(lease.location).store(0, std::memory_order_release);
}

// The daemon's side: every block location the given regions protect, read
// after a seq_cst fence (step 2 above). Call after the retiring stores.
using FastLeaseSet = absl::flat_hash_set<uint64_t>;
void CollectFastLeases(std::span<const std::span<const FastLease>> regions, FastLeaseSet* out);

// ---- The regions file ----
//
// The daemon keeps every session's lease slots in one file beside the shared
// lease table (`<lease_table_path>.fast`): a 4 KiB header, then 4 KiB
// regions. A region belongs to a process (its header names it), handed to
// one of its sessions at a time, and it lives across a daemon restart while
// that process does. A client maps only its own region's page (read-write);
// a stray write of its own can only spoil its own leases.
//
// A region: a 64-byte FastRegionHeader, then kFastRegionSlots slots. `high`
// is one past the highest slot the client has used: the client raises it
// (relaxed) before it publishes a slot at or above it, so the daemon, after
// its fence, reads no slot the client could be using above the `high` it
// sees (the same fence argument as for the slot itself).
inline constexpr char kFastLeaseMagic[8] = {'C', 'I', 'S', 'T', 'F', 'L', 'S', '1'};
inline constexpr uint32_t kFastLeaseVersion = 1;
inline constexpr uint64_t kFastRegionBytes = 4096;

struct FastRegionHeader {
  uint64_t high;
  // The process the daemon gave the region to (0: free). A region is given to
  // another process only after this one has exited: until then it may still
  // write there, and the daemon keeps reading it.
  int32_t owner_pid;
  uint32_t pad;
  uint64_t owner_start;  // its start time (/proc/<pid>/stat), against pid reuse
  uint64_t reserved[5];
};
static_assert(sizeof(FastRegionHeader) == 64);
inline constexpr uint32_t kFastRegionSlots =
    (kFastRegionBytes - sizeof(FastRegionHeader)) / sizeof(FastLease);

struct FastLeaseFileHeader {
  char magic[8];
  uint32_t version;
  uint32_t region_count;
  uint64_t region_bytes;
  uint64_t static_checksum;  // XXH3-64 of the fields above
};

// One region as its client maps it.
struct FastRegion {
  FastRegionHeader* header = nullptr;
  std::span<FastLease> slots;
};
// The region whose page starts at `page` (kFastRegionBytes, writable).
FastRegion RegionAt(char* page);

// The client's side of its region: hands out its slots. Thread-safe.
class FastSlots {
 public:
  explicit FastSlots(FastRegion region) : region_(region) {}
  // A free slot (the region's high raised to cover it); nullopt when every
  // slot is taken (the caller takes the socket path).
  std::optional<uint32_t> Take();
  // Gives back a slot that is free in the region (after Release, or after a
  // TryAcquire that failed).
  void Give(uint32_t slot);
  std::span<FastLease> slots() const { return region_.slots; }

 private:
  FastRegion region_;
  std::mutex mu_;
  std::vector<uint32_t> free_;  // below high_
  uint32_t high_ = 0;
};

// The daemon's side of the file. Not thread-safe: the ObjectStore serialises
// calls (under its mutex).
class FastLeaseRegions {
 public:
  static uint64_t BytesFor(uint32_t regions) { return kFastRegionBytes * (uint64_t{regions} + 1); }
  // Where region r starts in the file (a page boundary).
  static uint64_t RegionOffset(uint32_t r) { return kFastRegionBytes * (uint64_t{r} + 1); }

  // Writes a file of `regions` empty regions. InvalidArgument if too small.
  static absl::StatusOr<FastLeaseRegions> Format(char* base, uint64_t size, uint32_t regions);
  // Serves a file an earlier daemon wrote, keeping every region's slots (the
  // caller clears those of sessions that did not survive). FailedPrecondition
  // (saying why) if it holds no file of this version and region count.
  static absl::StatusOr<FastLeaseRegions> Open(char* base, uint64_t size, uint32_t regions);

  uint32_t region_count() const { return regions_; }
  FastRegion region(uint32_t r) const { return RegionAt(base_ + RegionOffset(r)); }
  // Frees every slot of region r and its owner (the owner is gone or let go
  // of everything).
  void Clear(uint32_t r);
  void SetOwner(uint32_t r, int32_t pid, uint64_t start);
  std::pair<int32_t, uint64_t> Owner(uint32_t r) const;
  // Whether any slot below region r's high names a block.
  bool InUse(uint32_t r) const { return CountInUse(r) > 0; }
  // How many do (a snapshot: clients change them as it reads).
  uint64_t CountInUse(uint32_t r) const;
  // CollectFastLeases over the given regions, each read up to its high.
  void Collect(std::span<const uint32_t> regions, FastLeaseSet* out) const;
  // How many slots of the given regions name each location (a snapshot, for
  // reports: clients change them as it reads).
  using Counts = absl::flat_hash_map<uint64_t, uint32_t>;
  void Count(std::span<const uint32_t> regions, Counts* out) const;

 private:
  FastLeaseRegions(char* base, uint32_t regions) : base_(base), regions_(regions) {}
  char* base_;
  uint32_t regions_;
};

}  // namespace cistern::store
