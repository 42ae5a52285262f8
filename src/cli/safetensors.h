// The safetensors file format: a validating header parser and a header writer.
// Pure functions apart from ReadSafetensorsHeader (which preads); thread-safe.
//
// A safetensors file is
//   u64 N (little-endian) | N bytes of UTF-8 JSON | data area
// where the JSON is an object mapping each tensor name to
//   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// (offsets relative to the data area) plus an optional "__metadata__" object of
// string values. The JSON may be followed by spaces. Tensors are contiguous,
// do not overlap and cover the data area exactly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "include/cistern/object.h"

namespace cistern::cli {

// The reference implementation's limit on N.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;
// The u64 that precedes the JSON.
inline constexpr uint64_t kSafetensorsLengthBytes = 8;
// The deepest nesting of arrays and objects a header may have: the recursion
// limit of serde_json, which the reference implementation parses with. A
// valid header needs 3.
inline constexpr uint64_t kSafetensorsMaxNesting = 128;

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kUInt8;
  std::vector<uint64_t> shape;
  // The tensor's bytes are [begin, end) of the data area.
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  bool operator==(const SafetensorsTensor&) const = default;
};

using SafetensorsMetadata = std::vector<std::pair<std::string, std::string>>;

struct SafetensorsFile {
  uint64_t data_start = 0;  // file offset of the data area: 8 + N
  uint64_t data_bytes = 0;  // the data area's size: file size - data_start
  // In the order of their bytes in the data area (by begin, then end).
  std::vector<SafetensorsTensor> tensors;
  SafetensorsMetadata metadata;  // "__metadata__", in header order; empty if absent
};

// "F32", "BF16", "BOOL", ... for `t`; empty for a value that is not a DType.
std::string_view SafetensorsDTypeName(DType t);
// The DType a safetensors dtype name stands for; nullopt for a name that is
// not one of the 13 Cistern stores (F8_E4M3, C64, ... and nonsense).
std::optional<DType> DTypeFromSafetensorsName(std::string_view name);

// Parses and validates the header of a safetensors file of `file_size` bytes.
// `bytes` is the file's beginning: at least the 8-byte length and the N header
// bytes it announces (more, up to the whole file, is fine). `file_name` prefixes
// every error message.
//
// InvalidArgument, naming the tensor and the rule broken, when: the file is
// shorter than 8 bytes; N exceeds kSafetensorsMaxHeaderBytes or the file; fewer
// than 8 + N bytes were given; the header is not UTF-8 JSON (followed only by
// whitespace), nests deeper than kSafetensorsMaxNesting, or is not an object; a name is empty or
// repeats; an entry is not an object with a known "dtype", a "shape" of non-negative integers and
// "data_offsets" [begin, end] of non-negative integers with begin <= end <=
// the data area's size; end - begin != product(shape) * dtype size; two tensors
// overlap, or bytes of the data area belong to no tensor; "__metadata__" is not
// an object of strings. Keys other than the three in a tensor's entry are
// ignored, as the reference implementation does. Messages show names and
// values cut to 64 bytes, so they stay short whatever the header holds.
absl::StatusOr<SafetensorsFile> ParseSafetensorsHeader(std::string_view file_name,
                                                       std::string_view bytes, uint64_t file_size);

// Reads (with pread; the file position is unchanged) and validates the header
// of the open file `fd`. The errors of ParseSafetensorsHeader, and the errno
// status of a failed fstat or pread.
absl::StatusOr<SafetensorsFile> ReadSafetensorsHeader(int fd, std::string_view file_name);

// The first bytes of a safetensors file holding `tensors` (their name, dtype,
// shape and nbytes; offsets are ignored) with their data contiguous in the
// given order, and `metadata` (omitted when empty): the 8-byte length, then the
// compact JSON ("__metadata__" first, then the tensors in order, each as
// {"dtype","shape","data_offsets"}), padded with spaces so that the data area
// starts at a multiple of 8 — the bytes the reference implementation writes
// for tensors in this order. The tensors' bytes follow it in the file.
//
// InvalidArgument when a name is empty, "__metadata__", not UTF-8 or repeats;
// a dtype is unknown; nbytes != product(shape) * dtype size; a metadata key
// repeats or a metadata string is not UTF-8.
absl::StatusOr<std::string> MakeSafetensorsHeader(const std::vector<TensorInfo>& tensors,
                                                  const SafetensorsMetadata& metadata = {});

}  // namespace cistern::cli
