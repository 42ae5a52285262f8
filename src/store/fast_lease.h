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
#include <span>
#include <string_view>

#include "absl/container/flat_hash_set.h"
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

}  // namespace cistern::store
