#include "src/client/fast_path.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <atomic>
#include <mutex>

#include "fmt/format.h"
#include "src/common/errno_status.h"
#include "src/store/layout.h"
#include "src/store/manifest.h"

namespace cistern::client_internal {
namespace {

// Counts forks (in the child): a FastPath made before one is its parent's.
std::atomic<uint64_t> g_fork_epoch{0};
std::once_flag g_atfork_once;
void OnFork() { g_fork_epoch.fetch_add(1, std::memory_order_relaxed); }

bool FileId(int fd, dev_t* dev, ino_t* ino) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return false;
  *dev = st.st_dev;
  *ino = st.st_ino;
  return true;
}

}  // namespace

absl::StatusOr<std::shared_ptr<FastPath>> FastPath::Map(int index_fd, uint64_t index_bytes,
                                                        int lease_fd, uint64_t region_offset,
                                                        uint64_t region_bytes,
                                                        std::vector<store::ArenaMap> arenas) {
  if (region_bytes != store::kFastRegionBytes || region_offset % store::kFastRegionBytes != 0) {
    return absl::InternalError(fmt::format("cisternd offered a fast lease region of {} bytes at {}",
                                           region_bytes, region_offset));
  }
  void* index = ::mmap(nullptr, index_bytes, PROT_READ, MAP_SHARED, index_fd, 0);
  if (index == MAP_FAILED) return ErrnoStatus(errno, "map the fast path index");
  auto reader = store::SharedIndexReader::Open(static_cast<const char*>(index), index_bytes);
  if (!reader.ok()) {
    ::munmap(index, index_bytes);
    return reader.status();
  }
  void* region = ::mmap(nullptr, region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, lease_fd,
                        static_cast<off_t>(region_offset));
  if (region == MAP_FAILED) {
    absl::Status s = ErrnoStatus(errno, "map the fast lease region");
    ::munmap(index, index_bytes);
    return s;
  }
  std::call_once(g_atfork_once, [] { ::pthread_atfork(nullptr, nullptr, OnFork); });
  std::shared_ptr<FastPath> f(new FastPath(static_cast<const char*>(index), index_bytes,
                                           static_cast<char*>(region), region_bytes, *reader,
                                           std::move(arenas)));
  f->region_offset_ = region_offset;
  f->fork_epoch_ = g_fork_epoch.load(std::memory_order_relaxed);
  if (!FileId(index_fd, &f->index_dev_, &f->index_ino_) ||
      !FileId(lease_fd, &f->lease_dev_, &f->lease_ino_)) {
    return ErrnoStatus(errno, "stat the fast path files");
  }
  return f;
}

bool FastPath::Same(int index_fd, uint64_t index_bytes, int lease_fd,
                    uint64_t region_offset) const {
  dev_t idev, ldev;
  ino_t iino, lino;
  return region_offset == region_offset_ && index_bytes == index_bytes_ &&
         FileId(index_fd, &idev, &iino) && FileId(lease_fd, &ldev, &lino) && idev == index_dev_ &&
         iino == index_ino_ && ldev == lease_dev_ && lino == lease_ino_;
}

bool FastPath::Mine() const { return g_fork_epoch.load(std::memory_order_relaxed) == fork_epoch_; }

FastPath::FastPath(const char* index, uint64_t index_bytes, char* region, uint64_t region_bytes,
                   store::SharedIndexReader reader, std::vector<store::ArenaMap> arenas)
    : index_(index),
      index_bytes_(index_bytes),
      region_(region),
      region_bytes_(region_bytes),
      reader_(reader),
      arenas_(std::move(arenas)),
      slots_(store::RegionAt(region)) {}

FastPath::~FastPath() {
  ::munmap(const_cast<char*>(index_), index_bytes_);
  ::munmap(region_, region_bytes_);
}

bool FastPath::Acquire(std::string_view key, uint64_t generation, store::FastHit* hit) {
  if (!Mine()) return false;
  auto slot = slots_.Take();
  if (!slot) return false;
  if (store::TryAcquire(reader_, arenas_, slots_.slots(), *slot, key, hit)) {
    if (generation == 0 || hit->generation == generation) return true;
    store::Release(slots_.slots()[*slot]);
  }
  slots_.Give(*slot);
  return false;
}

std::shared_ptr<const std::vector<TensorInfo>> FastPath::Manifest(const store::FastHit& hit) {
  // Acquire checked the header against its block; the manifest lies between
  // the key and the payload.
  const store::ObjectHeader* h = hit.header;
  const char* block = reinterpret_cast<const char*>(h);
  const uint64_t m = store::ManifestOffset(h->key_bytes);
  if (m > h->payload_offset || h->manifest_bytes > h->payload_offset - m) return nullptr;
  const std::string_view raw(block + m, h->manifest_bytes);
  const BlockGeneration k{hit.header, hit.generation};
  {
    // A hit must also match the manifest's bytes: generations start again at
    // 1 in an arena formatted anew, which this process may still have mapped
    // at the same address (a reconnect keeps the mappings).
    MutexLock l(&manifest_mu_);
    if (auto it = manifests_.find(k);
        it != manifests_.end() && it->second.count == h->tensor_count && it->second.raw == raw) {
      return it->second.tensors;
    }
  }
  auto tensors = store::DecodeManifest(raw, h->tensor_count);
  if (!tensors.ok()) return nullptr;
  auto shared = std::make_shared<const std::vector<TensorInfo>>(std::move(*tensors));
  MutexLock l(&manifest_mu_);
  if (cached_tensors_ + shared->size() > kMaxCachedTensors) {
    manifests_.clear();
    cached_tensors_ = 0;
  }
  if (shared->size() <= kMaxCachedTensors) {
    CachedManifest& e = manifests_[k];
    cached_tensors_ = cached_tensors_ - (e.tensors ? e.tensors->size() : 0) + shared->size();
    e = CachedManifest{std::string(raw), h->tensor_count, shared};
  }
  return shared;
}

bool FastPath::Release(const store::FastHit& hit) {
  if (!Mine()) return false;  // the parent's lease, not this process's to end
  store::Release(slots_.slots()[hit.slot]);
  slots_.Give(hit.slot);
  // Was the block retired while leased? Then the daemon may be keeping it for
  // this lease alone. The fence pairs with the daemon's (fast_lease.h): either
  // its scan after retiring saw the slot free, or this load sees the state.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto* h = const_cast<store::ObjectHeader*>(hit.header);
  return std::atomic_ref<uint32_t>(h->state).load(std::memory_order_relaxed) !=
         static_cast<uint32_t>(store::ObjectState::kSealed);
}

}  // namespace cistern::client_internal
