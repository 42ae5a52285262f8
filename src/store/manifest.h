// The manifest of a tensor-dict object: validation and its binary encoding in
// the object header. Pure functions; thread-safe.
//
// Encoding: for each tensor, a 24-byte head
//   u64 offset | u64 nbytes | u8 dtype | u8 rank | u16 name_bytes | u32 zero
// then `rank` u64 dims, then the name bytes, padded to 8.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "include/cistern/object.h"

namespace cistern::store {

inline constexpr size_t kMaxTensorNameBytes = 1024;
inline constexpr size_t kMaxRank = 16;
inline constexpr size_t kMaxTensors = 1 << 20;

// InvalidArgument naming the tensor and the rule it breaks when: a name is empty,
// longer than kMaxTensorNameBytes, not UTF-8, contains NUL or repeats; a dtype is
// unknown; rank > kMaxRank; nbytes != product(shape) * dtype size; offset is not
// a multiple of 64; a tensor extends past `payload_size`; two tensors overlap.
// product(shape) * item: a tensor's bytes, or nullopt on overflow.
std::optional<uint64_t> ShapeBytes(const std::vector<uint64_t>& shape, uint64_t item);

absl::Status ValidateManifest(const std::vector<TensorInfo>& tensors, uint64_t payload_size);

// Bytes EncodeManifest will write.
uint64_t EncodedManifestBytes(const std::vector<TensorInfo>& tensors);
// Writes exactly EncodedManifestBytes(tensors) bytes to `out`.
void EncodeManifest(const std::vector<TensorInfo>& tensors, char* out);
// Decodes `count` tensors; DataLoss if the bytes are malformed (the manifest in
// an arena is not trusted).
absl::StatusOr<std::vector<TensorInfo>> DecodeManifest(std::string_view bytes, uint32_t count);

}  // namespace cistern::store
