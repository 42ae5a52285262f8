// The client's side of the local fast path (docs/architecture.md): a get of
// a key this host holds, with no round trip to cisternd. The shared index is
// mapped read-only; this session's page of lease slots read-write; the
// arenas are the Connection's read-only mappings. A lease is taken and ended
// in shared memory (src/store/fast_lease.h has the protocol and its
// memory-ordering argument); anything the fast path cannot serve (a key not
// indexed, a generation that changed under it, every slot taken) takes the
// socket path instead.
//
// Shared (shared_ptr) by the Connection and every view holding one of its
// leases. The region belongs to this process until it exits (the daemon never
// gives it to another process before), and a reconnect asks for it back, so
// views taken before a reconnect release where they were taken. A forked
// child neither takes nor ends leases here: the region is its parent's.
// Thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "include/cistern/object.h"
#include "src/common/mutex.h"
#include "src/store/fast_lease.h"
#include "src/store/shared_index.h"

namespace cistern::client_internal {

class FastPath {
 public:
  // Maps `index_bytes` of the index file and the page at `region_offset` of
  // the fast lease file. `arenas` must outlive this object.
  static absl::StatusOr<std::shared_ptr<FastPath>> Map(int index_fd, uint64_t index_bytes,
                                                       int lease_fd, uint64_t region_offset,
                                                       uint64_t region_bytes,
                                                       std::vector<store::ArenaMap> arenas);
  ~FastPath();
  FastPath(const FastPath&) = delete;
  FastPath& operator=(const FastPath&) = delete;

  // Leases `key`'s visible generation (only if it is `generation`, when that
  // is non-zero). False: take the socket path.
  bool Acquire(std::string_view key, uint64_t generation, store::FastHit* hit);
  // Ends the lease in `slot`. True when the block was retired meanwhile: the
  // caller then tells cisternd (FastReleased), which frees it at once.
  bool Release(const store::FastHit& hit);

  // The tensors of the sealed tensor dict whose header `hit` leased, decoded
  // once per (block, generation) and shared by every view of it: a sealed
  // generation's manifest never changes, and decoding one (a string and a
  // vector per tensor) cost a fast-path get more than the rest of it. A hit
  // is used only if the manifest's bytes are still the cached ones. Null
  // when the manifest is malformed. The cache holds at most
  // kMaxCachedTensors tensors' worth and starts over when full.
  std::shared_ptr<const std::vector<TensorInfo>> Manifest(const store::FastHit& hit);
  static constexpr size_t kMaxCachedTensors = 1 << 16;

  uint64_t region_offset() const { return region_offset_; }
  // False in a process forked after this was made.
  bool Mine() const;
  // Whether a hello's fast path is this one (same files, same region), so a
  // reconnected session goes on with it.
  bool Same(int index_fd, uint64_t index_bytes, int lease_fd, uint64_t region_offset) const;

 private:
  FastPath(const char* index, uint64_t index_bytes, char* region, uint64_t region_bytes,
           store::SharedIndexReader reader, std::vector<store::ArenaMap> arenas);

  const char* index_;
  uint64_t index_bytes_;
  char* region_;
  uint64_t region_bytes_;
  store::SharedIndexReader reader_;
  std::vector<store::ArenaMap> arenas_;
  store::FastSlots slots_;
  uint64_t region_offset_ = 0;
  dev_t index_dev_ = 0, lease_dev_ = 0;
  ino_t index_ino_ = 0, lease_ino_ = 0;
  uint64_t fork_epoch_ = 0;

  struct BlockGeneration {
    const void* header;
    uint64_t generation;
    bool operator==(const BlockGeneration&) const = default;
  };
  struct BlockGenerationHash {
    size_t operator()(const BlockGeneration& k) const {
      return std::hash<const void*>()(k.header) ^ (k.generation * 0x9e3779b97f4a7c15ull);
    }
  };
  struct CachedManifest {
    std::string raw;  // the manifest's bytes, compared on every hit
    uint32_t count = 0;
    std::shared_ptr<const std::vector<TensorInfo>> tensors;
  };
  Mutex manifest_mu_;
  std::unordered_map<BlockGeneration, CachedManifest, BlockGenerationHash> manifests_
      ABSL_GUARDED_BY(manifest_mu_);
  size_t cached_tensors_ ABSL_GUARDED_BY(manifest_mu_) = 0;
};

}  // namespace cistern::client_internal
