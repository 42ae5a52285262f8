#include "src/store/manifest.h"

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "fmt/format.h"
#include "src/common/utf8.h"
#include "src/store/layout.h"

namespace cistern::store {
namespace {

struct Head {
  uint64_t offset;
  uint64_t nbytes;
  uint8_t dtype;
  uint8_t rank;
  uint16_t name_bytes;
  uint32_t zero;
};
static_assert(sizeof(Head) == 24);

uint64_t EntryBytes(size_t rank, size_t name_bytes) {
  return AlignUp(sizeof(Head) + rank * 8 + name_bytes, 8);
}

bool ValidDType(uint8_t d) { return d >= 1 && d <= kMaxDType; }

}  // namespace

absl::Status ValidateManifest(const std::vector<TensorInfo>& tensors, uint64_t payload_size) {
  if (tensors.size() > kMaxTensors) {
    return absl::InvalidArgumentError(
        fmt::format("manifest has {} tensors; the limit is {}", tensors.size(), kMaxTensors));
  }
  absl::flat_hash_set<std::string_view> names;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const TensorInfo& t : tensors) {
    if (t.name.empty()) return absl::InvalidArgumentError("tensor name is empty");
    if (t.name.size() > kMaxTensorNameBytes) {
      return absl::InvalidArgumentError(fmt::format("tensor name of {} bytes exceeds {} bytes",
                                                    t.name.size(), kMaxTensorNameBytes));
    }
    if (t.name.find('\0') != std::string::npos || !IsValidUtf8(t.name)) {
      return absl::InvalidArgumentError("tensor name is not UTF-8 without NUL bytes");
    }
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(fmt::format("tensor '{}' appears twice", t.name));
    }
    if (!ValidDType(static_cast<uint8_t>(t.dtype))) {
      return absl::InvalidArgumentError(
          fmt::format("tensor '{}' has unknown dtype {}", t.name, static_cast<int>(t.dtype)));
    }
    if (t.shape.size() > kMaxRank) {
      return absl::InvalidArgumentError(fmt::format("tensor '{}' has rank {}; the limit is {}",
                                                    t.name, t.shape.size(), kMaxRank));
    }
    auto expect = ShapeBytes(t.shape, DTypeSize(t.dtype));
    if (!expect || *expect != t.nbytes) {
      return absl::InvalidArgumentError(fmt::format(
          "tensor '{}' has nbytes {} but its shape and dtype {} make {}", t.name, t.nbytes,
          DTypeName(t.dtype), expect ? fmt::format("{}", *expect) : std::string("an overflow")));
    }
    if (t.offset % kAlign != 0) {
      return absl::InvalidArgumentError(
          fmt::format("tensor '{}' offset {} is not a multiple of {}", t.name, t.offset, kAlign));
    }
    if (t.offset > payload_size || t.nbytes > payload_size - t.offset) {
      return absl::InvalidArgumentError(
          fmt::format("tensor '{}' [{}, +{}) extends past the object's {} bytes", t.name, t.offset,
                      t.nbytes, payload_size));
    }
    if (t.nbytes > 0) ranges.emplace_back(t.offset, t.nbytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i - 1].first + ranges[i - 1].second > ranges[i].first) {
      return absl::InvalidArgumentError(fmt::format("tensors overlap: [{}, +{}) and [{}, +{})",
                                                    ranges[i - 1].first, ranges[i - 1].second,
                                                    ranges[i].first, ranges[i].second));
    }
  }
  return absl::OkStatus();
}

uint64_t EncodedManifestBytes(const std::vector<TensorInfo>& tensors) {
  uint64_t n = 0;
  for (const TensorInfo& t : tensors) n += EntryBytes(t.shape.size(), t.name.size());
  return n;
}

void EncodeManifest(const std::vector<TensorInfo>& tensors, char* out) {
  for (const TensorInfo& t : tensors) {
    Head h{t.offset,
           t.nbytes,
           static_cast<uint8_t>(t.dtype),
           static_cast<uint8_t>(t.shape.size()),
           static_cast<uint16_t>(t.name.size()),
           0};
    uint64_t entry = EntryBytes(t.shape.size(), t.name.size());
    std::memset(out, 0, entry);
    std::memcpy(out, &h, sizeof h);
    if (!t.shape.empty()) std::memcpy(out + sizeof h, t.shape.data(), t.shape.size() * 8);
    std::memcpy(out + sizeof h + t.shape.size() * 8, t.name.data(), t.name.size());
    out += entry;
  }
}

absl::StatusOr<std::vector<TensorInfo>> DecodeManifest(std::string_view bytes, uint32_t count) {
  std::vector<TensorInfo> out;
  out.reserve(std::min<size_t>(count, bytes.size() / sizeof(Head)));
  size_t pos = 0;
  for (uint32_t i = 0; i < count; ++i) {
    Head h;
    if (bytes.size() - pos < sizeof h) {
      return absl::DataLossError(fmt::format("manifest truncated at tensor {}", i));
    }
    std::memcpy(&h, bytes.data() + pos, sizeof h);
    if (!ValidDType(h.dtype) || h.rank > kMaxRank || h.name_bytes == 0 ||
        h.name_bytes > kMaxTensorNameBytes) {
      return absl::DataLossError(fmt::format("manifest entry {} is malformed", i));
    }
    uint64_t entry = EntryBytes(h.rank, h.name_bytes);
    if (bytes.size() - pos < entry) {
      return absl::DataLossError(fmt::format("manifest truncated at tensor {}", i));
    }
    TensorInfo t;
    t.offset = h.offset;
    t.nbytes = h.nbytes;
    t.dtype = static_cast<DType>(h.dtype);
    t.shape.resize(h.rank);
    if (h.rank) std::memcpy(t.shape.data(), bytes.data() + pos + sizeof h, h.rank * 8);
    t.name.assign(bytes.data() + pos + sizeof h + h.rank * 8, h.name_bytes);
    out.push_back(std::move(t));
    pos += entry;
  }
  return out;
}

std::optional<uint64_t> ShapeBytes(const std::vector<uint64_t>& shape, uint64_t item) {
  uint64_t n = item;
  for (uint64_t d : shape) {
    if (d != 0 && n > UINT64_MAX / d) return std::nullopt;
    n *= d;
  }
  return n;
}

}  // namespace cistern::store
