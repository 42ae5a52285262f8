// Allocation of slots and entries. Both are handed out from a free list of
// indices released earlier, then from a high-water mark that only grows, so a
// table sized for a million leases costs memory (in the daemon and in the
// mapped file) only for the entries ever used at once. Attach rebuilds the
// free lists from the table itself: whatever the previous daemon left in use
// for a living holder stays exactly where it is.
#include "src/store/shared_lease_table.h"

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "fmt/format.h"
#include "src/common/check.h"
#include "src/store/checksum.h"
#include "src/store/layout.h"

namespace cistern::store {
namespace {

constexpr size_t kStaticBytes = offsetof(LeaseTableHeader, static_checksum);

}  // namespace

uint64_t SharedLeaseTable::BytesFor(uint32_t slots, uint64_t entries) {
  return AlignUp(
      kLeaseTableHeaderBytes + uint64_t{slots} * sizeof(SessionSlot) + entries * sizeof(LeaseEntry),
      4096);
}

SessionSlot* SharedLeaseTable::slot(uint32_t i) const {
  return reinterpret_cast<SessionSlot*>(base_ + kLeaseTableHeaderBytes) + i;
}

LeaseEntry* SharedLeaseTable::entry(uint64_t i) const {
  return reinterpret_cast<LeaseEntry*>(base_ + kLeaseTableHeaderBytes +
                                       uint64_t{slots_} * sizeof(SessionSlot)) +
         i;
}

uint64_t SharedLeaseTable::Owner(uint32_t slot, Kind kind, uint32_t tier) {
  return (uint64_t{slot} + 1) | (uint64_t{tier} << 48) |
         (uint64_t{static_cast<uint8_t>(kind)} << 56);
}

absl::Status SharedLeaseTable::Format(char* base, uint64_t size, uint32_t slots, uint64_t entries,
                                      std::span<const uint64_t> tier_identity,
                                      uint64_t incarnation) {
  if (tier_identity.size() > kMaxLeaseTableTiers) {
    return absl::InvalidArgumentError(fmt::format("{} tiers exceed the lease table's limit of {}",
                                                  tier_identity.size(), kMaxLeaseTableTiers));
  }
  if (size < BytesFor(slots, entries)) {
    return absl::InvalidArgumentError(fmt::format(
        "lease table of {} bytes is smaller than the {} bytes {} slots and {} entries need", size,
        BytesFor(slots, entries), slots, entries));
  }
  // Invalidate first so a crash while formatting leaves no valid table. Slots
  // and entries need no clearing: nothing reads past the high-water marks.
  std::memset(base, 0, kLeaseTableHeaderBytes);
  auto* h = reinterpret_cast<LeaseTableHeader*>(base);
  h->version = kLeaseTableVersion;
  h->header_bytes = kLeaseTableHeaderBytes;
  h->slot_count = slots;
  h->tier_count = static_cast<uint32_t>(tier_identity.size());
  h->entry_count = entries;
  h->file_bytes = size;
  std::copy(tier_identity.begin(), tier_identity.end(), h->tier_identity);
  h->incarnation = incarnation;
  std::memcpy(h->magic, kLeaseTableMagic, sizeof kLeaseTableMagic);
  h->static_checksum = Checksum(h, kStaticBytes);
  return absl::OkStatus();
}

absl::StatusOr<SharedLeaseTable::Contents> SharedLeaseTable::Read(
    const char* base, uint64_t size, uint32_t slots, uint64_t entries,
    std::span<const uint64_t> tier_identity) {
  const auto* h = reinterpret_cast<const LeaseTableHeader*>(base);
  if (size < kLeaseTableHeaderBytes ||
      std::memcmp(h->magic, kLeaseTableMagic, sizeof kLeaseTableMagic) != 0) {
    return absl::FailedPreconditionError("no lease table (bad magic)");
  }
  if (h->version != kLeaseTableVersion || h->header_bytes != kLeaseTableHeaderBytes ||
      h->static_checksum != Checksum(h, kStaticBytes)) {
    return absl::FailedPreconditionError("lease table header is damaged or of another version");
  }
  if (h->slot_count != slots || h->entry_count != entries || h->file_bytes != size ||
      size < BytesFor(slots, entries)) {
    return absl::FailedPreconditionError(
        fmt::format("lease table is for {} sessions and {} leases in {} bytes, not {}, {} and {}",
                    h->slot_count, h->entry_count, h->file_bytes, slots, entries, size));
  }
  if (h->tier_count != tier_identity.size() ||
      !std::equal(tier_identity.begin(), tier_identity.end(), h->tier_identity)) {
    return absl::FailedPreconditionError("lease table refers to other arenas (formatted since)");
  }
  SharedLeaseTable t(const_cast<char*>(base), slots, entries);
  Contents out;
  out.incarnation = LoadAcquire(&h->incarnation);
  uint64_t slot_high = std::min<uint64_t>(LoadAcquire(&h->slot_high), slots);
  uint64_t entry_high = std::min<uint64_t>(LoadAcquire(&h->entry_high), entries);
  std::vector<int64_t> session_of(slot_high, -1);
  for (uint32_t i = 0; i < slot_high; ++i) {
    const SessionSlot* s = t.slot(i);
    uint64_t id = LoadAcquire(&s->session_id);
    if (id == 0) continue;
    session_of[i] = static_cast<int64_t>(out.sessions.size());
    out.sessions.push_back({i, id, s->incarnation, s->pid, s->uid, s->pid_start, {}});
  }
  for (uint64_t i = 0; i < entry_high; ++i) {
    const LeaseEntry* e = t.entry(i);
    uint64_t owner = LoadAcquire(&e->owner);
    if (owner == 0) continue;
    uint64_t slot_plus_one = owner & 0xFFFFFFFFull;
    uint32_t tier = (owner >> 48) & 0xFF;
    auto kind = static_cast<Kind>(owner >> 56);
    // An entry naming a free slot, an unknown tier or kind is ignored: its
    // session's slot was retired after it (the slot is cleared last).
    if (slot_plus_one == 0 || slot_plus_one > slot_high || session_of[slot_plus_one - 1] < 0 ||
        tier >= tier_identity.size() || (kind != Kind::kLease && kind != Kind::kWrite)) {
      continue;
    }
    out.sessions[session_of[slot_plus_one - 1]].entries.push_back(
        {i, kind, tier, e->id, e->block_offset, e->generation});
  }
  return out;
}

SharedLeaseTable SharedLeaseTable::Attach(char* base, uint64_t size,
                                          const std::vector<Session>& keep) {
  auto* h = reinterpret_cast<LeaseTableHeader*>(base);
  SharedLeaseTable t(base, h->slot_count, h->entry_count);
  CHECK(size >= BytesFor(t.slots_, t.entries_));
  absl::flat_hash_set<uint32_t> kept_slots;
  absl::flat_hash_set<uint64_t> kept_entries;
  for (const Session& s : keep) {
    kept_slots.insert(s.slot);
    t.slot_high_ = std::max(t.slot_high_, s.slot + 1);
    for (const Entry& e : s.entries) {
      kept_entries.insert(e.index);
      t.entry_high_ = std::max(t.entry_high_, e.index + 1);
    }
  }
  // Entries before slots: an entry is never left naming a slot that is free.
  uint64_t old_entry_high = std::min<uint64_t>(LoadAcquire(&h->entry_high), t.entries_);
  uint64_t old_slot_high = std::min<uint64_t>(LoadAcquire(&h->slot_high), t.slots_);
  for (uint64_t i = 0; i < old_entry_high; ++i) {
    LeaseEntry* e = t.entry(i);
    if (LoadAcquire(&e->owner) != 0 && !kept_entries.contains(i)) StoreRelease(&e->owner, 0);
  }
  for (uint32_t i = 0; i < old_slot_high; ++i) {
    SessionSlot* s = t.slot(i);
    if (LoadAcquire(&s->session_id) != 0 && !kept_slots.contains(i)) {
      StoreRelease(&s->session_id, 0);
    }
  }
  // Lowered only now that nothing above the new marks is in use.
  StoreRelease(&h->entry_high, t.entry_high_);
  StoreRelease(&h->slot_high, t.slot_high_);
  for (uint64_t i = t.entry_high_; i-- > 0;) {
    if (!kept_entries.contains(i)) t.free_entries_.push_back(i);
  }
  for (uint32_t i = t.slot_high_; i-- > 0;) {
    if (!kept_slots.contains(i)) t.free_slots_.push_back(i);
  }
  t.used_entries_ = kept_entries.size();
  t.used_slots_ = kept_slots.size();
  StoreRelease(&h->incarnation, LoadAcquire(&h->incarnation) + 1);
  return t;
}

uint64_t SharedLeaseTable::incarnation() const { return LoadAcquire(&header()->incarnation); }

absl::StatusOr<uint32_t> SharedLeaseTable::OpenSlot(uint64_t session_id, int32_t pid, uint32_t uid,
                                                    uint64_t pid_start) {
  uint32_t i;
  if (!free_slots_.empty()) {
    i = free_slots_.back();
    free_slots_.pop_back();
  } else if (slot_high_ < slots_) {
    i = slot_high_++;
  } else {
    return absl::ResourceExhaustedError(
        fmt::format("the lease table's {} session slots are all in use", slots_));
  }
  SessionSlot* s = slot(i);
  s->incarnation = incarnation();
  s->pid_start = pid_start;
  s->pid = pid;
  s->uid = uid;
  StoreRelease(&s->session_id, session_id);
  if (i + 1 > LoadAcquire(&header()->slot_high)) StoreRelease(&header()->slot_high, i + 1);
  ++used_slots_;
  return i;
}

void SharedLeaseTable::CloseSlot(uint32_t i) {
  CHECK(i < slots_);
  StoreRelease(&slot(i)->session_id, 0);
  free_slots_.push_back(i);
  --used_slots_;
}

absl::StatusOr<uint64_t> SharedLeaseTable::AddEntry(uint32_t slot_index, Kind kind, uint32_t tier,
                                                    uint64_t id, uint64_t block_offset,
                                                    uint64_t generation) {
  uint64_t i;
  if (!free_entries_.empty()) {
    i = free_entries_.back();
    free_entries_.pop_back();
  } else if (entry_high_ < entries_) {
    i = entry_high_++;
  } else {
    return absl::ResourceExhaustedError(fmt::format(
        "this host holds {} leases and pending writes, the most max_leases allows; release "
        "some, or raise max_leases",
        entries_));
  }
  LeaseEntry* e = entry(i);
  e->id = id;
  e->block_offset = block_offset;
  e->generation = generation;
  StoreRelease(&e->owner, Owner(slot_index, kind, tier));
  if (i + 1 > LoadAcquire(&header()->entry_high)) StoreRelease(&header()->entry_high, i + 1);
  ++used_entries_;
  return i;
}

void SharedLeaseTable::RemoveEntry(uint64_t i) {
  CHECK(i < entries_);
  StoreRelease(&entry(i)->owner, 0);
  free_entries_.push_back(i);
  --used_entries_;
}

void SharedLeaseTable::MoveEntry(uint64_t i, uint32_t slot_index) {
  LeaseEntry* e = entry(i);
  uint64_t owner = LoadAcquire(&e->owner);
  CHECK(owner != 0);
  StoreRelease(&e->owner, (owner & ~0xFFFFFFFFull) | (uint64_t{slot_index} + 1));
}

}  // namespace cistern::store
