#include "src/store/fast_lease.h"

#include <cstring>

namespace cistern::store {
namespace {

uint64_t Load64(const uint64_t* p, std::memory_order o = std::memory_order_relaxed) {
  return std::atomic_ref<uint64_t>(*const_cast<uint64_t*>(p)).load(o);
}
uint32_t Load32(const uint32_t* p, std::memory_order o = std::memory_order_relaxed) {
  return std::atomic_ref<uint32_t>(*const_cast<uint32_t*>(p)).load(o);
}

}  // namespace

const ObjectHeader* CheckSealed(std::span<const ArenaMap> arenas, uint64_t location,
                                uint64_t generation, std::string_view key) {
  const uint32_t tier = LocationTier(location);
  const uint64_t offset = LocationOffset(location);
  if (tier >= arenas.size()) return nullptr;
  const ArenaMap& a = arenas[tier];
  if (offset < kSuperblockBytes || offset % kAlign != 0 || offset > a.size ||
      a.size - offset < sizeof(ObjectHeader)) {
    return nullptr;
  }
  const auto* h = reinterpret_cast<const ObjectHeader*>(a.base + offset);
  // The state first, with acquire: a sealed state was stored (release) after
  // every field below was written.
  if (Load32(&h->state, std::memory_order_acquire) != static_cast<uint32_t>(ObjectState::kSealed)) {
    return nullptr;
  }
  const uint64_t tag = Load64(&h->tag);
  if (!TagValid(tag) || TagKind(tag) != kObjectBlock) return nullptr;
  const uint64_t block = TagSize(tag);
  if (block > a.size - offset) return nullptr;
  if (Load32(&h->magic) != kObjectMagic || Load64(&h->generation) != generation) return nullptr;
  const uint32_t key_bytes = Load32(&h->key_bytes);
  if (key_bytes != key.size() || key_bytes > kMaxKeyBytes) return nullptr;
  const uint64_t payload_offset = Load64(&h->payload_offset);
  const uint64_t payload_size = Load64(&h->payload_size);
  if (payload_offset < sizeof(ObjectHeader) + key_bytes || payload_offset > block ||
      payload_size > block - payload_offset) {
    return nullptr;
  }
  // The key bytes are immutable while the object is sealed; a lease keeps it so.
  if (std::memcmp(reinterpret_cast<const char*>(h + 1), key.data(), key.size()) != 0)
    return nullptr;
  return h;
}

bool TryAcquire(const SharedIndexReader& index, std::span<const ArenaMap> arenas,
                std::span<FastLease> leases, uint32_t slot, std::string_view key, FastHit* hit) {
  if (slot >= leases.size()) return false;
  FastLease& lease = leases[slot];
  auto location = std::atomic_ref<uint64_t>(lease.location);
  auto generation = std::atomic_ref<uint64_t>(lease.generation);
  const ObjectHeader* found = nullptr;
  SharedIndexReader::Entry chosen;
  index.Find(IndexKeyHash(key), [&](const SharedIndexReader::Entry& e) {
    if (e.location == 0) return false;
    // Step 2: publish the lease, generation first. Release: whatever this
    // process read under the slot's earlier lease happens before the daemon
    // sees the slot change (and frees that block).
    generation.store(e.generation, std::memory_order_relaxed);
    location.store(e.location, std::memory_order_release);
    // Step 3.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Step 4.
    found = CheckSealed(arenas, e.location, e.generation, key);
    if (found == nullptr) {
      // Release, like Release(): a relaxed store here would let the daemon
      // see the slot free without the reads of this slot's earlier block
      // happening before its reuse (TSan caught that).
      location.store(0, std::memory_order_release);
      return false;
    }
    chosen = e;
    return true;
  });
  if (found == nullptr) return false;
  hit->slot = slot;
  hit->tier = LocationTier(chosen.location);
  hit->block_offset = LocationOffset(chosen.location);
  hit->generation = chosen.generation;
  hit->header = found;
  return true;
}

void CollectFastLeases(std::span<const std::span<const FastLease>> regions, FastLeaseSet* out) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (std::span<const FastLease> region : regions) {
    for (const FastLease& l : region) {
      // Acquire: pairs with Release and with TryAcquire's publication, so the
      // client's reads of a block it let go happen before the block is reused.
      uint64_t location = Load64(&l.location, std::memory_order_acquire);
      if (location != 0) out->insert(location);
    }
  }
}

}  // namespace cistern::store
