// The arena's on-memory layout: a superblock, then a sequence of blocks. This
// header is the one definition shared by the daemon (which writes headers) and
// clients (which read payloads and manifests). Changing anything here requires
// bumping kLayoutVersion.
//
//   offset 0        Superblock (4 KiB)
//   offset 4096     block, block, block, ... up to the end of the arena
//
// Every block is 64-byte aligned and begins with a 64-bit tag:
//   bits 56..63  kTagMagic (0xC5)
//   bits  6..55  block size in bytes (a multiple of 64)
//   bits  0..5   kind: kFreeBlock or kObjectBlock
// so the whole data region can be walked from its first block to its end. A
// tag is always updated with one aligned 8-byte store, which keeps the walk
// valid at every instant: a daemon killed at any instruction leaves an arena
// that recovery can read.
//
// An object block is laid out as
//   ObjectHeader (128 bytes) | key bytes | pad to 8 | manifest | pad to 64 | payload
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cistern::store {

inline constexpr uint64_t kAlign = 64;
inline constexpr uint64_t kSuperblockBytes = 4096;
inline constexpr uint32_t kLayoutVersion = 1;
inline constexpr char kArenaMagic[8] = {'C', 'I', 'S', 'T', 'E', 'R', 'N', 'A'};
inline constexpr uint32_t kObjectMagic = 0x4A424F43;  // "COBJ"
inline constexpr uint64_t kTagMagic = 0xC5;
inline constexpr uint64_t kFreeBlock = 1;
inline constexpr uint64_t kObjectBlock = 2;
inline constexpr size_t kMaxKeyBytes = 1024;
inline constexpr size_t kMaxTierNameBytes = 32;
// The most write space a session may hold reserved ahead (ObjectStore::ReserveExtent).
inline constexpr uint64_t kMaxExtentBytes = uint64_t{16} << 20;

constexpr uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

struct Superblock {
  char magic[8];
  uint32_t layout_version;
  uint32_t superblock_bytes;
  uint64_t arena_bytes;  // whole file
  uint64_t data_offset;  // first block
  uint64_t data_bytes;   // arena_bytes - data_offset
  uint32_t tier_index;
  uint32_t reserved0;
  char tier_name[64];
  uint64_t format_unix_ns;
  uint64_t static_checksum;  // XXH3-64 of every field above
  // The highest generation ever issued in this arena. Updated (atomic store)
  // before a generation is written into any object header.
  uint64_t max_generation;
  uint64_t reserved[7];
};
static_assert(sizeof(Superblock) <= kSuperblockBytes);
inline constexpr size_t kSuperblockStaticBytes = offsetof(Superblock, static_checksum);

// Object states as stored in ObjectHeader::state (one aligned 4-byte store).
enum class ObjectState : uint32_t {
  kWriting = 1,  // reserved, being filled; invisible; freed by recovery
  kSealed = 2,   // visible (unless a newer sealed generation of the key exists)
  kRemoved = 3,  // invisible, bytes kept until the last lease ends; freed by recovery
  kAborted = 4,  // never visible; freed by recovery
};

enum ObjectFlags : uint32_t {
  kFlagEvictable = 1,
  kFlagHasChecksum = 2,
  kFlagTensorDict = 4,
  // In a cluster, never published to the registry (PutOptions::local_only).
  kFlagLocalOnly = 8,
};

struct ObjectHeader {
  // Words that change after creation.
  uint64_t tag;
  uint32_t state;  // ObjectState
  uint32_t magic;  // kObjectMagic
  // Reserved for lease counts kept in shared memory by a future lock-free get.
  uint64_t shared_leases;
  // XXH3-64 of bytes [kHeaderChecksumFrom, 128) of this header, then the key,
  // then the manifest. Written at seal.
  uint64_t header_checksum;
  // Fields covered by header_checksum.
  uint64_t generation;      // assigned at seal; 0 while writing
  uint64_t payload_offset;  // from the block start; multiple of 64
  uint64_t payload_size;
  uint64_t checksum;  // XXH3-64 of the payload when kFlagHasChecksum
  uint64_t create_unix_ns;
  uint32_t key_bytes;
  uint32_t manifest_bytes;
  uint32_t tensor_count;
  uint32_t flags;  // ObjectFlags
  uint8_t reserved[40];
};
static_assert(sizeof(ObjectHeader) == 128);
inline constexpr size_t kHeaderChecksumFrom = offsetof(ObjectHeader, generation);

constexpr uint64_t MakeTag(uint64_t size, uint64_t kind) { return (kTagMagic << 56) | size | kind; }
constexpr uint64_t TagSize(uint64_t tag) { return tag & 0x00FFFFFFFFFFFFC0ull; }
constexpr uint64_t TagKind(uint64_t tag) { return tag & 0x3F; }
constexpr bool TagValid(uint64_t tag) {
  return (tag >> 56) == kTagMagic && (TagKind(tag) == kFreeBlock || TagKind(tag) == kObjectBlock) &&
         TagSize(tag) >= kAlign;
}

// Where the manifest and payload sit inside an object block.
constexpr uint64_t ManifestOffset(uint64_t key_bytes) {
  return AlignUp(sizeof(ObjectHeader) + key_bytes, 8);
}
constexpr uint64_t PayloadOffset(uint64_t key_bytes, uint64_t manifest_bytes) {
  return AlignUp(ManifestOffset(key_bytes) + manifest_bytes, kAlign);
}
constexpr uint64_t BlockBytes(uint64_t key_bytes, uint64_t manifest_bytes, uint64_t payload) {
  return AlignUp(PayloadOffset(key_bytes, manifest_bytes) + payload, kAlign);
}

// Single-word atomic access to fields of a mapped arena.
inline uint64_t LoadAcquire(const uint64_t* p) {
  return std::atomic_ref<uint64_t>(*const_cast<uint64_t*>(p)).load(std::memory_order_acquire);
}
inline void StoreRelease(uint64_t* p, uint64_t v) {
  std::atomic_ref<uint64_t>(*p).store(v, std::memory_order_release);
}
inline uint32_t LoadAcquire(const uint32_t* p) {
  return std::atomic_ref<uint32_t>(*const_cast<uint32_t*>(p)).load(std::memory_order_acquire);
}
inline void StoreRelease(uint32_t* p, uint32_t v) {
  std::atomic_ref<uint32_t>(*p).store(v, std::memory_order_release);
}

}  // namespace cistern::store
