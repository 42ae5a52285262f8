#include "src/store/shared_index.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "xxhash.h"

namespace cistern::store {
namespace {

uint64_t Load(const uint64_t* p, std::memory_order o) {
  return std::atomic_ref<uint64_t>(*const_cast<uint64_t*>(p)).load(o);
}
void Store(uint64_t* p, uint64_t v, std::memory_order o) {
  std::atomic_ref<uint64_t>(*p).store(v, o);
}

uint64_t HeaderChecksum(const IndexHeader& h) {
  return XXH3_64bits(&h, offsetof(IndexHeader, static_checksum));
}

bool PowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Debian's Abseil has its own string_view, which the map's lookup takes.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

uint64_t IndexKeyHash(std::string_view key) {
  uint64_t h = XXH3_64bits(key.data(), key.size());
  return h <= kIndexTombstone ? h + 2 : h;
}

uint64_t SharedIndex::BytesFor(uint64_t slots) {
  return kIndexHeaderBytes + slots * sizeof(IndexSlot);
}

absl::StatusOr<SharedIndex> SharedIndex::Format(char* base, uint64_t size, uint64_t slots,
                                                bool zeroed) {
  if (!PowerOfTwo(slots) || slots > (uint64_t{1} << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat("index slots ", slots, " is not a power of two"));
  }
  if (size < BytesFor(slots)) {
    return absl::InvalidArgumentError(
        absl::StrCat("index of ", slots, " slots needs ", BytesFor(slots), " bytes, got ", size));
  }
  SharedIndex index(base, slots);
  // Through the seqlock, so that a reader still mapping an earlier index of
  // this size sees each slot either as it was or empty.
  for (uint64_t i = 0; i < (zeroed ? 0 : slots); ++i) {
    if (Load(&index.slot(i)->key_hash, std::memory_order_relaxed) != kIndexEmpty) {
      index.Write(i, kIndexEmpty, 0, 0);
    }
  }
  IndexHeader h{};
  std::memcpy(h.magic, kIndexMagic, sizeof(h.magic));
  h.version = kIndexVersion;
  h.header_bytes = kIndexHeaderBytes;
  h.slot_count = slots;
  h.static_checksum = HeaderChecksum(h);
  std::memcpy(base, &h, sizeof(h));
  return index;
}

IndexSlot* SharedIndex::slot(uint64_t i) const {
  return reinterpret_cast<IndexSlot*>(base_ + kIndexHeaderBytes) + i;
}

void SharedIndex::Write(uint64_t i, uint64_t key_hash, uint64_t location, uint64_t generation) {
  IndexSlot* s = slot(i);
  uint64_t seq = Load(&s->seq, std::memory_order_relaxed) | 1;  // odd: being written
  Store(&s->seq, seq, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  Store(&s->key_hash, key_hash, std::memory_order_relaxed);
  Store(&s->location, location, std::memory_order_relaxed);
  Store(&s->generation, generation, std::memory_order_relaxed);
  Store(&s->seq, seq + 1, std::memory_order_release);
}

bool SharedIndex::Publish(std::string_view key, uint32_t tier, uint64_t offset,
                          uint64_t generation) {
  const uint64_t location = PackLocation(tier, offset);
  const uint64_t h = IndexKeyHash(key);
  if (auto it = slot_of_.find(AV(key)); it != slot_of_.end()) {
    Write(it->second, h, location, generation);
    return true;
  }
  for (uint32_t p = 0; p < kIndexProbe; ++p) {
    uint64_t i = (h + p) & (slots_ - 1);
    uint64_t used = Load(&slot(i)->key_hash, std::memory_order_relaxed);
    if (used == kIndexEmpty || used == kIndexTombstone) {
      Write(i, h, location, generation);
      slot_of_.emplace(std::string(key), i);
      return true;
    }
  }
  ++overflows_;
  return false;
}

void SharedIndex::Unpublish(std::string_view key) {
  auto it = slot_of_.find(AV(key));
  if (it == slot_of_.end()) return;
  // A tombstone, not empty: keys placed past this slot stay reachable.
  Write(it->second, kIndexTombstone, 0, 0);
  slot_of_.erase(it);
}

absl::StatusOr<SharedIndexReader> SharedIndexReader::Open(const char* base, uint64_t size) {
  IndexHeader h;
  if (size < sizeof(h)) return absl::FailedPreconditionError("index: shorter than its header");
  std::memcpy(&h, base, sizeof(h));
  if (std::memcmp(h.magic, kIndexMagic, sizeof(h.magic)) != 0) {
    return absl::FailedPreconditionError("index: bad magic");
  }
  if (h.version != kIndexVersion || h.header_bytes != kIndexHeaderBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("index: version ", h.version, ", this client reads ", kIndexVersion));
  }
  if (h.static_checksum != HeaderChecksum(h) || !PowerOfTwo(h.slot_count) ||
      h.slot_count > (uint64_t{1} << 40)) {
    return absl::FailedPreconditionError("index: header checksum mismatch");
  }
  if (size < SharedIndex::BytesFor(h.slot_count)) {
    return absl::FailedPreconditionError(absl::StrCat("index: ", h.slot_count, " slots need ",
                                                      SharedIndex::BytesFor(h.slot_count),
                                                      " bytes, mapped ", size));
  }
  return SharedIndexReader(base, h.slot_count);
}

bool SharedIndexReader::Read(uint64_t i, uint64_t* key_hash, Entry* e) const {
  const IndexSlot* s = reinterpret_cast<const IndexSlot*>(base_ + kIndexHeaderBytes) + i;
  for (int attempt = 0; attempt < 8; ++attempt) {
    uint64_t before = Load(&s->seq, std::memory_order_acquire);
    if (before & 1) continue;
    *key_hash = Load(&s->key_hash, std::memory_order_relaxed);
    e->location = Load(&s->location, std::memory_order_relaxed);
    e->generation = Load(&s->generation, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (Load(&s->seq, std::memory_order_relaxed) == before) return true;
  }
  return false;
}

}  // namespace cistern::store
