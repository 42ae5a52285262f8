// Recovery walks the data region block by block from its first block, trusting
// nothing: every tag is checked for its magic, kind and a size that stays
// inside the arena, and every sealed object for its header checksum, layout
// arithmetic, manifest and payload checksum. Runs of blocks that end up free
// (free blocks, and objects that were never sealed or were removed) are merged
// into one free block each and handed to the allocator, so a recovered arena has
// no two adjacent free blocks, the same invariant the allocator keeps.
#include "src/store/arena.h"

#include <cstring>

#include "fmt/format.h"
#include "src/common/check.h"
#include "src/common/fmt_absl.h"
#include "src/common/status_macros.h"
#include "src/store/checksum.h"
#include "src/store/manifest.h"

namespace cistern::store {

uint64_t HeaderChecksum(const ObjectHeader* h) {
  const char* p = reinterpret_cast<const char*>(h);
  uint64_t end = ManifestOffset(h->key_bytes) + h->manifest_bytes;
  return Checksum(p + kHeaderChecksumFrom, end - kHeaderChecksumFrom);
}

absl::Status Arena::Format(char* base, uint64_t size, uint32_t tier_index,
                           std::string_view tier_name, uint64_t now_unix_ns) {
  if (size < kSuperblockBytes + 16 * kAlign || size % kAlign != 0) {
    return absl::InvalidArgumentError(
        fmt::format("arena of {} bytes is too small or not a multiple of {} (minimum {} bytes)",
                    size, kAlign, kSuperblockBytes + 16 * kAlign));
  }
  if (tier_name.empty() || tier_name.size() > kMaxTierNameBytes) {
    return absl::InvalidArgumentError(
        fmt::format("tier name '{}' must be 1..{} bytes", tier_name, kMaxTierNameBytes));
  }
  // Invalidate first so a crash during formatting leaves no valid superblock.
  std::memset(base, 0, sizeof(Superblock));
  Superblock* sb = reinterpret_cast<Superblock*>(base);
  sb->layout_version = kLayoutVersion;
  sb->superblock_bytes = kSuperblockBytes;
  sb->arena_bytes = size;
  sb->data_offset = kSuperblockBytes;
  sb->data_bytes = size - kSuperblockBytes;
  sb->tier_index = tier_index;
  std::memcpy(sb->tier_name, tier_name.data(), tier_name.size());
  sb->format_unix_ns = now_unix_ns;
  uint64_t* first_tag = reinterpret_cast<uint64_t*>(base + kSuperblockBytes);
  StoreRelease(first_tag, MakeTag(size - kSuperblockBytes, kFreeBlock));
  std::memcpy(sb->magic, kArenaMagic, sizeof kArenaMagic);
  sb->static_checksum = Checksum(sb, kSuperblockStaticBytes);
  return absl::OkStatus();
}

absl::StatusOr<Arena> Arena::Attach(char* base, uint64_t size, uint32_t tier_index,
                                    std::string_view tier_name) {
  const Superblock* sb = reinterpret_cast<const Superblock*>(base);
  if (size < kSuperblockBytes || std::memcmp(sb->magic, kArenaMagic, sizeof kArenaMagic) != 0) {
    return absl::FailedPreconditionError("not a Cistern arena (bad magic)");
  }
  if (sb->layout_version != kLayoutVersion) {
    return absl::FailedPreconditionError(
        fmt::format("arena layout version {} is not the supported version {}", sb->layout_version,
                    kLayoutVersion));
  }
  if (sb->static_checksum != Checksum(sb, kSuperblockStaticBytes)) {
    return absl::FailedPreconditionError("arena superblock checksum mismatch");
  }
  if (sb->arena_bytes != size || sb->data_offset != kSuperblockBytes ||
      sb->data_bytes != size - kSuperblockBytes) {
    return absl::FailedPreconditionError(
        fmt::format("arena was formatted for {} bytes but is {} bytes", sb->arena_bytes, size));
  }
  std::string_view name(sb->tier_name, strnlen(sb->tier_name, sizeof sb->tier_name));
  if (sb->tier_index != tier_index || name != tier_name) {
    return absl::FailedPreconditionError(
        fmt::format("arena belongs to tier {} '{}', not tier {} '{}'", sb->tier_index, name,
                    tier_index, tier_name));
  }
  return Arena(base, size);
}

std::string Arena::Verify(uint64_t block_offset, uint64_t block_size, RecoveredObject* out) const {
  const ObjectHeader* h = header(block_offset);
  if (h->magic != kObjectMagic) return "bad object magic";
  if (block_size < sizeof(ObjectHeader) || h->key_bytes == 0 || h->key_bytes > kMaxKeyBytes) {
    return "bad key length";
  }
  if (ManifestOffset(h->key_bytes) + uint64_t{h->manifest_bytes} > block_size) {
    return "manifest past the block";
  }
  out->key.assign(reinterpret_cast<const char*>(h) + sizeof(ObjectHeader), h->key_bytes);
  if (h->payload_offset != PayloadOffset(h->key_bytes, h->manifest_bytes) ||
      h->payload_size > block_size - h->payload_offset) {
    return "payload past the block";
  }
  if (HeaderChecksum(h) != h->header_checksum) return "header checksum mismatch";
  if (h->flags & kFlagTensorDict) {
    std::string_view m(reinterpret_cast<const char*>(h) + ManifestOffset(h->key_bytes),
                       h->manifest_bytes);
    auto tensors = DecodeManifest(m, h->tensor_count);
    if (!tensors.ok()) return std::string(tensors.status().message());
    auto valid = ValidateManifest(*tensors, h->payload_size);
    if (!valid.ok()) return std::string(valid.message());
  }
  if ((h->flags & kFlagHasChecksum) &&
      Checksum(reinterpret_cast<const char*>(h) + h->payload_offset, h->payload_size) !=
          h->checksum) {
    return "payload checksum mismatch";
  }
  out->block_offset = block_offset;
  out->block_size = block_size;
  out->generation = h->generation;
  out->payload_size = h->payload_size;
  out->flags = h->flags;
  return "";
}

absl::StatusOr<Arena::RecoveryResult> Arena::Recover(Allocator* alloc,
                                                     const RecoverOptions& options) {
  RecoveryResult result;
  result.max_generation = max_generation();
  uint64_t run_start = 0, run_size = 0;
  auto extend_run = [&](uint64_t off, uint64_t n) {
    if (run_size == 0) run_start = off;
    run_size += n;
  };
  auto flush_run = [&] {
    if (run_size == 0) return;
    WriteFreeTag(run_start, run_size);
    alloc->Free(run_start, run_size);
    run_size = 0;
  };
  // A corrupt block: fail, free it, or keep it out of everyone's way.
  auto corrupt = [&](uint64_t off, uint64_t n, std::string key,
                     std::string reason) -> absl::Status {
    switch (options.on_corrupt) {
      case OnCorrupt::kFail:
        return absl::DataLossError(fmt::format(
            "object {} at arena offset {} is corrupt: {}; set recovery.on_corrupt_object: "
            "quarantine (keep it aside) or drop, or restart with --format to discard the arena",
            key.empty() ? "(key unreadable)" : "'" + key + "'", off, reason));
      case OnCorrupt::kDrop:
        result.dropped.push_back({off, n, std::move(key), std::move(reason)});
        extend_run(off, n);
        return absl::OkStatus();
      case OnCorrupt::kQuarantine:
        flush_run();
        result.quarantined.push_back({off, n, std::move(key), std::move(reason)});
        return absl::OkStatus();
    }
    return absl::OkStatus();
  };
  uint64_t off = data_offset();
  while (off < size_) {
    uint64_t tag = LoadAcquire(&header(off)->tag);
    uint64_t n = TagSize(tag);
    if (!TagValid(tag) || n > size_ - off) {
      return absl::DataLossError(
          fmt::format("arena is corrupt: invalid block tag {:#018x} at offset {}", tag, off));
    }
    if (TagKind(tag) == kFreeBlock) {
      extend_run(off, n);
      off += n;
      continue;
    }
    const ObjectHeader* h = header(off);
    auto state = static_cast<ObjectState>(LoadAcquire(&h->state));
    if (state == ObjectState::kSealed) {
      RecoveredObject obj;
      std::string reason = Verify(off, n, &obj);
      if (reason.empty()) {
        flush_run();
        if (obj.generation > result.max_generation) result.max_generation = obj.generation;
        result.sealed.push_back(std::move(obj));
      } else {
        RETURN_IF_ERROR(corrupt(off, n, obj.key, reason));
      }
    } else if (state == ObjectState::kWriting || state == ObjectState::kAborted ||
               state == ObjectState::kRemoved) {
      if (options.keep != nullptr && options.keep->contains(off)) {
        flush_run();
        KeptBlock k{off, n, state, h->generation, h->flags, ""};
        if (h->key_bytes > 0 && h->key_bytes <= kMaxKeyBytes &&
            sizeof(ObjectHeader) + h->key_bytes <= n) {
          k.key.assign(reinterpret_cast<const char*>(h) + sizeof(ObjectHeader), h->key_bytes);
        }
        if (k.generation > result.max_generation && state != ObjectState::kWriting) {
          result.max_generation = k.generation;
        }
        result.kept.push_back(std::move(k));
      } else {
        ++result.freed_blocks;
        extend_run(off, n);
      }
    } else {
      RETURN_IF_ERROR(corrupt(off, n, "", fmt::format("unknown object state {}", uint32_t(state))));
    }
    off += n;
  }
  flush_run();
  NoteGeneration(result.max_generation);
  return result;
}

void Arena::WriteHeader(ObjectHeader* h, size_t zero_from, std::string_view key,
                        const std::vector<TensorInfo>& tensors, uint64_t manifest_bytes,
                        uint64_t payload_size, uint32_t flags, uint64_t now_unix_ns) {
  char* p = reinterpret_cast<char*>(h);
  uint64_t payload_offset = PayloadOffset(key.size(), manifest_bytes);
  // Including the padding the header checksum covers.
  std::memset(p + zero_from, 0, payload_offset - zero_from);
  h->payload_offset = payload_offset;
  h->payload_size = payload_size;
  h->create_unix_ns = now_unix_ns;
  h->key_bytes = static_cast<uint32_t>(key.size());
  h->manifest_bytes = static_cast<uint32_t>(manifest_bytes);
  h->tensor_count = static_cast<uint32_t>(tensors.size());
  h->flags = flags;
  std::memcpy(p + sizeof(ObjectHeader), key.data(), key.size());
  if (!tensors.empty()) EncodeManifest(tensors, p + ManifestOffset(key.size()));
}

void Arena::InitObject(const Allocator::Allocation& a, uint64_t block_size, std::string_view key,
                       const std::vector<TensorInfo>& tensors, uint64_t manifest_bytes,
                       uint64_t payload_size, uint32_t flags, uint64_t now_unix_ns) {
  if (a.remainder_size > 0) WriteFreeTag(a.remainder_offset, a.remainder_size);
  ObjectHeader* h = header(a.offset);
  // Everything but the tag word.
  WriteHeader(h, sizeof(uint64_t), key, tensors, manifest_bytes, payload_size, flags, now_unix_ns);
  h->state = static_cast<uint32_t>(ObjectState::kWriting);
  h->magic = kObjectMagic;
  StoreRelease(&h->tag, MakeTag(block_size, kObjectBlock));
}

void Arena::RebindWriting(uint64_t block_offset, uint64_t block_size, std::string_view key,
                          const std::vector<TensorInfo>& tensors, uint64_t manifest_bytes,
                          uint64_t payload_size, uint32_t flags, uint64_t now_unix_ns) {
  ObjectHeader* h = header(block_offset);
  CHECK(LoadAcquire(&h->state) == static_cast<uint32_t>(ObjectState::kWriting));
  CHECK(block_size <= TagSize(LoadAcquire(&h->tag)));
  // Everything after the tag, state and magic words.
  WriteHeader(h, offsetof(ObjectHeader, shared_leases), key, tensors, manifest_bytes, payload_size,
              flags, now_unix_ns);
  StoreRelease(&h->tag, MakeTag(block_size, kObjectBlock));
}

void Arena::Seal(uint64_t block_offset, uint64_t generation, const uint64_t* checksum) {
  ObjectHeader* h = header(block_offset);
  CHECK(LoadAcquire(&h->state) == static_cast<uint32_t>(ObjectState::kWriting));
  NoteGeneration(generation);
  h->generation = generation;
  if (checksum) {
    h->checksum = *checksum;
    h->flags |= kFlagHasChecksum;
  }
  h->header_checksum = HeaderChecksum(h);
  SetState(block_offset, ObjectState::kSealed);
}

void Arena::SetState(uint64_t block_offset, ObjectState state) {
  StoreRelease(&header(block_offset)->state, static_cast<uint32_t>(state));
}

void Arena::WriteFreeTag(uint64_t offset, uint64_t size) {
  StoreRelease(&header(offset)->tag, MakeTag(size, kFreeBlock));
}

void Arena::NoteGeneration(uint64_t g) {
  if (g > max_generation()) StoreRelease(&superblock()->max_generation, g);
}

uint64_t Arena::max_generation() const { return LoadAcquire(&superblock()->max_generation); }

}  // namespace cistern::store
