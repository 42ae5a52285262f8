// The object model shared by the client API and the store: dtypes and the
// manifest entry of a tensor-dict object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cistern {

// Element types. The numeric values are part of the arena layout and the wire
// protocol (proto/cistern/local.proto DType); never renumber.
enum class DType : uint8_t {
  kFloat64 = 1,
  kFloat32 = 2,
  kFloat16 = 3,
  kBFloat16 = 4,
  kInt64 = 5,
  kInt32 = 6,
  kInt16 = 7,
  kInt8 = 8,
  kUInt8 = 9,
  kBool = 10,
  kUInt16 = 11,
  kUInt32 = 12,
  kUInt64 = 13,
};

inline constexpr uint8_t kMaxDType = 13;

// Bytes per element; 0 for a value that is not a DType.
constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kFloat64:
    case DType::kInt64:
    case DType::kUInt64:
      return 8;
    case DType::kFloat32:
    case DType::kInt32:
    case DType::kUInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
    case DType::kUInt16:
      return 2;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool:
      return 1;
  }
  return 0;
}

// Lower-case names as numpy and torch spell them ("float32", "bfloat16", "bool").
std::string_view DTypeName(DType t);
std::optional<DType> DTypeFromName(std::string_view name);

// One tensor of a tensor-dict object. `offset` is relative to the start of the
// object's payload and a multiple of 64 bytes; `nbytes` is the product of
// `shape` times DTypeSize(dtype).
struct TensorInfo {
  std::string name;
  DType dtype = DType::kUInt8;
  std::vector<uint64_t> shape;
  uint64_t offset = 0;
  uint64_t nbytes = 0;

  bool operator==(const TensorInfo&) const = default;
};

// Identifies one sealed generation of a key.
struct ObjectRef {
  std::string key;
  uint64_t generation = 0;
  uint64_t size = 0;
};

}  // namespace cistern
