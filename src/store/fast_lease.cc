#include "src/store/fast_lease.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "xxhash.h"

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

namespace {

uint64_t FileChecksum(const FastLeaseFileHeader& h) {
  return XXH3_64bits(&h, offsetof(FastLeaseFileHeader, static_checksum));
}

// The slots of `r` a client may be using: up to its high, which the client
// raised before publishing any slot above it.
std::span<const FastLease> Used(const FastRegion& r) {
  uint64_t high = Load64(&r.header->high, std::memory_order_acquire);
  return r.slots.first(std::min<uint64_t>(high, r.slots.size()));
}

}  // namespace

FastRegion RegionAt(char* page) {
  auto* h = reinterpret_cast<FastRegionHeader*>(page);
  return {h, {reinterpret_cast<FastLease*>(h + 1), kFastRegionSlots}};
}

std::optional<uint32_t> FastSlots::Take() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!free_.empty()) {
    uint32_t s = free_.back();
    free_.pop_back();
    return s;
  }
  if (high_ >= region_.slots.size()) return std::nullopt;
  // Raised before the slot is published (TryAcquire's stores come after).
  std::atomic_ref<uint64_t>(region_.header->high).store(high_ + 1, std::memory_order_relaxed);
  return high_++;
}

void FastSlots::Give(uint32_t slot) {
  std::lock_guard<std::mutex> lock(mu_);
  free_.push_back(slot);
}

absl::StatusOr<FastLeaseRegions> FastLeaseRegions::Format(char* base, uint64_t size,
                                                          uint32_t regions) {
  if (size < BytesFor(regions)) {
    return absl::InvalidArgumentError(absl::StrCat("fast lease file of ", regions,
                                                   " regions needs ", BytesFor(regions),
                                                   " bytes, got ", size));
  }
  FastLeaseRegions f(base, regions);
  for (uint32_t r = 0; r < regions; ++r) {
    // A high beyond the slots is garbage (a file of another kind): clear all.
    FastRegion reg = f.region(r);
    if (Load64(&reg.header->high) > kFastRegionSlots) {
      std::atomic_ref<uint64_t>(reg.header->high).store(kFastRegionSlots);
    }
    f.Clear(r);
  }
  FastLeaseFileHeader h{};
  std::memcpy(h.magic, kFastLeaseMagic, sizeof(h.magic));
  h.version = kFastLeaseVersion;
  h.region_count = regions;
  h.region_bytes = kFastRegionBytes;
  h.static_checksum = FileChecksum(h);
  std::memcpy(base, &h, sizeof(h));
  return f;
}

absl::StatusOr<FastLeaseRegions> FastLeaseRegions::Open(char* base, uint64_t size,
                                                        uint32_t regions) {
  FastLeaseFileHeader h;
  if (size < sizeof(h)) return absl::FailedPreconditionError("fast lease file is truncated");
  std::memcpy(&h, base, sizeof(h));
  if (std::memcmp(h.magic, kFastLeaseMagic, sizeof(h.magic)) != 0 ||
      h.static_checksum != FileChecksum(h)) {
    return absl::FailedPreconditionError("not a fast lease file (bad magic or checksum)");
  }
  if (h.version != kFastLeaseVersion || h.region_bytes != kFastRegionBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("fast lease file version ", h.version, " is not ", kFastLeaseVersion));
  }
  if (h.region_count != regions || size < BytesFor(regions)) {
    return absl::FailedPreconditionError(absl::StrCat("fast lease file has ", h.region_count,
                                                      " regions, this daemon uses ", regions));
  }
  return FastLeaseRegions(base, regions);
}

void FastLeaseRegions::SetOwner(uint32_t r, int32_t pid, uint64_t start) {
  FastRegionHeader* h = region(r).header;
  h->owner_start = start;
  h->owner_pid = pid;
}

std::pair<int32_t, uint64_t> FastLeaseRegions::Owner(uint32_t r) const {
  const FastRegionHeader* h = region(r).header;
  return {h->owner_pid, h->owner_start};
}

void FastLeaseRegions::Clear(uint32_t r) {
  FastRegion reg = region(r);
  if (reg.header->owner_pid != 0 || reg.header->owner_start != 0) SetOwner(r, 0, 0);
  // Only up to the high: a region never used stays a hole in the file.
  uint64_t high = Load64(&reg.header->high);
  if (high == 0) return;
  for (FastLease& l : reg.slots.first(std::min<uint64_t>(high, reg.slots.size()))) {
    std::atomic_ref<uint64_t>(l.location).store(0, std::memory_order_relaxed);
    std::atomic_ref<uint64_t>(l.generation).store(0, std::memory_order_relaxed);
  }
  std::atomic_ref<uint64_t>(reg.header->high).store(0, std::memory_order_release);
}

void FastLeaseRegions::Count(std::span<const uint32_t> regions, Counts* out) const {
  for (uint32_t r : regions) {
    if (r >= regions_) continue;
    for (const FastLease& l : Used(region(r))) {
      uint64_t location = Load64(&l.location, std::memory_order_acquire);
      if (location != 0) ++(*out)[location];
    }
  }
}

uint64_t FastLeaseRegions::CountInUse(uint32_t r) const {
  uint64_t n = 0;
  for (const FastLease& l : Used(region(r))) {
    if (Load64(&l.location, std::memory_order_acquire) != 0) ++n;
  }
  return n;
}

void FastLeaseRegions::Collect(std::span<const uint32_t> regions, FastLeaseSet* out) const {
  std::vector<std::span<const FastLease>> used;
  used.reserve(regions.size());
  // The fence comes first in CollectFastLeases; the highs are read after it
  // here too, so both are covered by the argument above.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (uint32_t r : regions) {
    if (r < regions_) used.push_back(Used(region(r)));
  }
  CollectFastLeases(used, out);
}

}  // namespace cistern::store
