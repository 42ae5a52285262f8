// SharedLeaseTable: the host's leases and pending writes, recorded in shared
// memory so that they outlive the daemon. A client process that holds a view
// keeps reading its bytes through its own mapping whatever happens to
// cisternd; if the daemon is killed or restarted, the restarted daemon reads
// this table, keeps every block that a still-living process holds, and hands
// those leases back to the process when it reconnects (ObjectStore's recovered
// sessions and AdoptSession). Without it a restarted daemon would reuse the
// blocks of leases that died with it, and a view held across the restart
// would show another key's bytes.
//
// It performs no I/O: the daemon maps a file (beside the first tier's arena)
// and hands the bytes in; tests hand in heap memory. The layout:
//
//   offset 0       LeaseTableHeader (4 KiB)
//   offset 4096    SessionSlot[slot_count]   (64 B each): one per session that
//                  said hello: its id, the daemon incarnation that opened it,
//                  and the holder's pid, uid and process start time
//   then           LeaseEntry[entry_count]   (32 B each): one per lease or
//                  pending write: owner slot, kind, tier, id, block, generation
//
// Crash safety: a slot or entry is published by one aligned 8-byte store of
// its first word (session_id or owner), after the other words, and the
// header's high-water mark is raised after that; it is retired by storing 0
// there. The daemon records a lease before it answers the get,
// and clears it before it frees the block, so at every instant the table
// names a superset of the leases any client knows about. The local fast path
// (clients taking leases without a round trip) is meant to build on the same
// entries: an owner word per entry is what a client would claim.
//
// Thread-safety: none; the ObjectStore serialises access (under its mutex).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cistern::store {

inline constexpr char kLeaseTableMagic[8] = {'C', 'I', 'S', 'T', 'L', 'E', 'A', 'S'};
inline constexpr uint32_t kLeaseTableVersion = 1;
inline constexpr uint32_t kLeaseTableHeaderBytes = 4096;
inline constexpr uint32_t kMaxLeaseTableTiers = 64;

struct LeaseTableHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint32_t slot_count;
  uint32_t tier_count;
  uint64_t entry_count;
  uint64_t file_bytes;
  // Which arenas the offsets refer to: each tier's superblock checksum, which
  // changes when the arena is formatted again.
  uint64_t tier_identity[kMaxLeaseTableTiers];
  uint64_t static_checksum;  // XXH3-64 of every field above
  // Bumped (one store) at every daemon start over this table.
  uint64_t incarnation;
  // Slots and entries at or above these were never used since the format, so
  // a reader looks at no more than these (a table sized for a million leases
  // costs only the pages actually used). Raised after the slot or entry they
  // come to cover is published.
  uint64_t entry_high;
  uint64_t slot_high;
};
static_assert(sizeof(LeaseTableHeader) <= kLeaseTableHeaderBytes);

struct SessionSlot {
  uint64_t session_id;  // 0: free. Published last.
  uint64_t incarnation;
  uint64_t pid_start;  // the holder's start time (/proc/<pid>/stat, clock ticks)
  int32_t pid;
  uint32_t uid;
  uint64_t reserved[4];
};
static_assert(sizeof(SessionSlot) == 64);

struct LeaseEntry {
  // 0: free; else bits 0..31 slot + 1, bits 48..55 tier, bits 56..63 kind.
  // Published last.
  uint64_t owner;
  uint64_t id;  // lease id or write id
  uint64_t block_offset;
  uint64_t generation;  // a lease's generation; 0 for a write
};
static_assert(sizeof(LeaseEntry) == 32);

class SharedLeaseTable {
 public:
  enum class Kind : uint8_t { kLease = 1, kWrite = 2 };
  static constexpr uint64_t kNoEntry = UINT64_MAX;

  // Bytes a table with these dimensions needs.
  static uint64_t BytesFor(uint32_t slots, uint64_t entries);

  struct Entry {
    uint64_t index = 0;  // in the table
    Kind kind = Kind::kLease;
    uint32_t tier = 0;
    uint64_t id = 0;
    uint64_t block_offset = 0;
    uint64_t generation = 0;
  };
  struct Session {
    uint32_t slot = 0;
    uint64_t session_id = 0;
    uint64_t incarnation = 0;
    int32_t pid = 0;
    uint32_t uid = 0;
    uint64_t pid_start = 0;
    std::vector<Entry> entries;
  };
  struct Contents {
    uint64_t incarnation = 0;
    std::vector<Session> sessions;  // slots in use, with their entries
  };
  // Reads a table written by an earlier daemon. FailedPrecondition (saying
  // why) if `base` holds no valid table, or one for other dimensions or other
  // arenas: then nothing in it can be trusted.
  static absl::StatusOr<Contents> Read(const char* base, uint64_t size, uint32_t slots,
                                       uint64_t entries, std::span<const uint64_t> tier_identity);

  // Writes an empty table (incarnation `incarnation`). InvalidArgument if the
  // region is too small or there are too many tiers.
  static absl::Status Format(char* base, uint64_t size, uint32_t slots, uint64_t entries,
                             std::span<const uint64_t> tier_identity, uint64_t incarnation);

  // Serves a table that Read accepted (or Format wrote): bumps its
  // incarnation, clears every slot and entry not in `keep` (the sessions
  // whose holders live on) and builds the free lists from what is left.
  static SharedLeaseTable Attach(char* base, uint64_t size, const std::vector<Session>& keep);

  uint64_t incarnation() const;
  uint32_t slot_count() const { return slots_; }
  uint64_t entry_count() const { return entries_; }

  // A free slot for a new session. ResourceExhausted when all are taken.
  absl::StatusOr<uint32_t> OpenSlot(uint64_t session_id, int32_t pid, uint32_t uid,
                                    uint64_t pid_start);
  // Frees the slot (its entries must have been removed).
  void CloseSlot(uint32_t slot);

  // Records a lease or write of the session in `slot`; returns the entry's
  // index. ResourceExhausted when the table is full.
  absl::StatusOr<uint64_t> AddEntry(uint32_t slot, Kind kind, uint32_t tier, uint64_t id,
                                    uint64_t block_offset, uint64_t generation);
  void RemoveEntry(uint64_t index);
  // Gives the entry to another slot (a reconnected client adopting it).
  void MoveEntry(uint64_t index, uint32_t slot);

  size_t used_entries() const { return used_entries_; }
  size_t used_slots() const { return used_slots_; }

 private:
  SharedLeaseTable(char* base, uint32_t slots, uint64_t entries)
      : base_(base), slots_(slots), entries_(entries) {}
  LeaseTableHeader* header() const { return reinterpret_cast<LeaseTableHeader*>(base_); }
  SessionSlot* slot(uint32_t i) const;
  LeaseEntry* entry(uint64_t i) const;
  static uint64_t Owner(uint32_t slot, Kind kind, uint32_t tier);

  char* base_;
  uint32_t slots_;
  uint64_t entries_;
  // Free slots and entries below the high-water marks; above them all are free.
  std::vector<uint32_t> free_slots_;
  std::vector<uint64_t> free_entries_;
  uint32_t slot_high_ = 0;
  uint64_t entry_high_ = 0;
  size_t used_entries_ = 0;
  size_t used_slots_ = 0;
};

}  // namespace cistern::store
