// An Arena is one tier's mapped memory seen through the layout of layout.h: the
// superblock, block tags and object headers. It performs no I/O; the daemon maps
// the file and hands the bytes in, and tests hand in heap memory. Not
// thread-safe; the ObjectStore serialises access.
//
// Crash safety: each state change an observer could see after a crash is one
// aligned store (see layout.h), and the methods below order their stores so the
// arena is walkable and meaningful after a kill at any point.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "include/cistern/object.h"
#include "src/store/allocator.h"
#include "src/store/layout.h"

namespace cistern::store {

class Arena {
 public:
  // Writes a fresh superblock and a single free block over the data region.
  // InvalidArgument if the region is too small or the name too long.
  static absl::Status Format(char* base, uint64_t size, uint32_t tier_index,
                             std::string_view tier_name, uint64_t now_unix_ns);

  // Validates the superblock of a formatted region. FailedPrecondition (with
  // what was found and what was expected) if the magic, layout version, static
  // checksum, size or tier do not match: the arena is never silently reused.
  static absl::StatusOr<Arena> Attach(char* base, uint64_t size, uint32_t tier_index,
                                      std::string_view tier_name);

  struct RecoveredObject {
    std::string key;
    uint64_t block_offset = 0;
    uint64_t block_size = 0;
    uint64_t generation = 0;
    uint64_t payload_size = 0;
    uint32_t flags = 0;
  };
  struct CorruptObject {
    uint64_t block_offset = 0;
    uint64_t block_size = 0;
    std::string key;  // empty when unreadable
    std::string reason;
  };
  // A block recovery would have freed (writing, aborted or removed) but kept
  // because a live process still holds it (RecoverOptions::keep).
  struct KeptBlock {
    uint64_t block_offset = 0;
    uint64_t block_size = 0;
    ObjectState state = ObjectState::kRemoved;
    uint64_t generation = 0;  // as the header says (0 while writing)
    uint32_t flags = 0;
    std::string key;  // as the header says (not verified)
  };
  enum class OnCorrupt { kFail, kDrop, kQuarantine };
  struct RecoverOptions {
    // A sealed object that fails verification (or a block in an unknown
    // state): stop with DataLoss naming it; free it; or keep its block,
    // invisible, and report it (the bytes stay for the operator).
    OnCorrupt on_corrupt = OnCorrupt::kQuarantine;
    // Offsets of blocks to keep even if unsealed or removed.
    const absl::flat_hash_set<uint64_t>* keep = nullptr;
  };
  struct RecoveryResult {
    std::vector<RecoveredObject> sealed;
    std::vector<CorruptObject> dropped;      // with kDrop
    std::vector<CorruptObject> quarantined;  // with kQuarantine
    std::vector<KeptBlock> kept;
    uint64_t freed_blocks = 0;  // writing, aborted and removed objects
    uint64_t max_generation = 0;
  };
  // Walks every block. Sealed objects are verified (header, manifest, payload
  // checksum) and returned; free blocks and writing, aborted or removed objects
  // are coalesced, written back as free blocks and given to `alloc`, except the
  // blocks in options.keep. A sealed object that fails verification is treated
  // as options.on_corrupt says. A broken block chain is always DataLoss.
  absl::StatusOr<RecoveryResult> Recover(Allocator* alloc, const RecoverOptions& options);

  // Names one formatting of an arena: changes whenever it is formatted again.
  // `base` must hold a valid superblock (Attach checks it).
  static uint64_t Identity(const char* base) {
    return reinterpret_cast<const Superblock*>(base)->static_checksum;
  }

  uint64_t data_offset() const { return kSuperblockBytes; }
  uint64_t data_bytes() const { return size_ - kSuperblockBytes; }
  char* base() const { return base_; }
  ObjectHeader* header(uint64_t block_offset) const {
    return reinterpret_cast<ObjectHeader*>(base_ + block_offset);
  }

  // Writes the header, key and manifest of a new object in state kWriting into
  // the block `a` allocated, and the free tag of the remainder. The block's tag
  // is stored last, so until then the arena still shows the old free block.
  void InitObject(const Allocator::Allocation& a, uint64_t block_size, std::string_view key,
                  const std::vector<TensorInfo>& tensors, uint64_t manifest_bytes,
                  uint64_t payload_size, uint32_t flags, uint64_t now_unix_ns);

  // Gives the writing object at `block_offset` (an extent, object_store.h) a
  // new key, manifest and payload size, and shrinks its block to
  // `block_size`. The tag and state words are never cleared: the header is
  // rewritten behind them and the smaller tag stored last, so a daemon killed
  // in between leaves either the old block or the new one, in state kWriting.
  // Whatever follows `block_size` must already carry its own tags. The bytes
  // from the new payload offset on are not touched (the client wrote them).
  void RebindWriting(uint64_t block_offset, uint64_t block_size, std::string_view key,
                     const std::vector<TensorInfo>& tensors, uint64_t manifest_bytes,
                     uint64_t payload_size, uint32_t flags, uint64_t now_unix_ns);

  // Records generation and checksum, then makes the object sealed.
  void Seal(uint64_t block_offset, uint64_t generation, const uint64_t* checksum);
  void SetState(uint64_t block_offset, ObjectState state);
  void WriteFreeTag(uint64_t offset, uint64_t size);

  // Raises the superblock's max_generation to at least `g`.
  void NoteGeneration(uint64_t g);
  uint64_t max_generation() const;

 private:
  // Zeroes [zero_from, payload offset) of the header at `h`, then writes its
  // fields other than tag, state and magic, the key and the manifest.
  void WriteHeader(ObjectHeader* h, size_t zero_from, std::string_view key,
                   const std::vector<TensorInfo>& tensors, uint64_t manifest_bytes,
                   uint64_t payload_size, uint32_t flags, uint64_t now_unix_ns);
  Arena(char* base, uint64_t size) : base_(base), size_(size) {}
  Superblock* superblock() const { return reinterpret_cast<Superblock*>(base_); }
  // Verifies one sealed object; returns the reason it is corrupt, or "".
  std::string Verify(uint64_t block_offset, uint64_t block_size, RecoveredObject* out) const;

  char* base_;
  uint64_t size_;
};

uint64_t HeaderChecksum(const ObjectHeader* h);

}  // namespace cistern::store
