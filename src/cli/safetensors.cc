// Validation of a safetensors header happens in three passes, so that no rule
// depends on the order of keys in the JSON. The first pass is the JSON parser
// itself, with a callback that records every top-level key as it is read: the
// parsed object keeps only the last of two equal keys, so a repeated tensor
// name can only be seen there. The second pass checks each entry on its own:
// a known dtype, a shape of non-negative integers, data_offsets [begin, end]
// inside the data area, and end - begin equal to the bytes the shape and dtype
// make (computed with an overflow check). The third pass sorts the entries by
// their byte range and walks them from offset 0: each must begin exactly where
// the previous one ended (earlier is an overlap, later a gap), and the last
// must end at the end of the data area. This is the reference
// implementation's rule, so a file passes here exactly when it would load
// there (for the dtypes Cistern stores).
#include "src/cli/safetensors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"
#include "src/common/utf8.h"
#include "src/store/manifest.h"

namespace cistern::cli {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::array<std::string_view, kMaxDType + 1> kNames = {
    "", "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "U16", "U32", "U64"};
constexpr std::string_view kKnownNames =
    "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, U16, U32, U64";

absl::Status Invalid(std::string_view file, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("{}: {}", file, what));
}

uint64_t LoadLe64(std::string_view p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// Error messages show at most this many bytes of a value or a name.
constexpr size_t kShownBytes = 64;

// `s` cut to kShownBytes (then "..."), for a message.
std::string Shown(std::string_view s) {
  if (s.size() <= kShownBytes) return std::string(s);
  return std::string(s.substr(0, kShownBytes - 4)) + " ...";
}

// Appends `j` as compact JSON to `out`, stopping once `out` holds more than
// kShownBytes bytes or below kShownDepth levels ("[...]", "{...}"): never
// more work than a short message needs, however large or deep `j` is.
constexpr int kShownDepth = 4;
void AppendBrief(const Json& j, int depth, std::string* out) {
  if (out->size() > kShownBytes) return;
  if (j.is_array() || j.is_object()) {
    bool array = j.is_array();
    if (depth >= kShownDepth && !j.empty()) {
      *out += array ? "[...]" : "{...}";
      return;
    }
    *out += array ? '[' : '{';
    bool first = true;
    for (auto it = j.begin(); it != j.end() && out->size() <= kShownBytes; ++it) {
      if (!first) *out += ',';
      first = false;
      if (!array) {
        AppendBrief(Json(Shown(it.key())), depth + 1, out);
        *out += ':';
      }
      AppendBrief(*it, depth + 1, out);
    }
    *out += array ? ']' : '}';
    return;
  }
  if (j.is_string()) {
    *out += Json(Shown(j.get_ref<const std::string&>()))
                .dump(-1, ' ', false, Json::error_handler_t::replace);
    return;
  }
  *out += j.dump();  // a number, a boolean or null: short
}

// A JSON value as it appears in a message, cut short if long or deep.
std::string Brief(const Json& j) {
  std::string s;
  AppendBrief(j, 0, &s);
  if (s.size() > kShownBytes) s = s.substr(0, kShownBytes - 4) + " ...";
  return s;
}

// N, checked against the limit and the file's size.
absl::StatusOr<uint64_t> HeaderLength(std::string_view file, std::string_view bytes,
                                      uint64_t file_size) {
  if (file_size < kSafetensorsLengthBytes) {
    return Invalid(file, fmt::format("file is {} bytes; a safetensors file begins with an "
                                     "8-byte header length",
                                     file_size));
  }
  if (bytes.size() < kSafetensorsLengthBytes) {
    return Invalid(file, fmt::format("only {} bytes of the file were given; the header length "
                                     "needs 8",
                                     bytes.size()));
  }
  uint64_t n = LoadLe64(bytes);
  if (n > kSafetensorsMaxHeaderBytes) {
    return Invalid(file, fmt::format("header length {} exceeds the limit of {} bytes (not a "
                                     "safetensors file?)",
                                     n, kSafetensorsMaxHeaderBytes));
  }
  if (n > file_size - kSafetensorsLengthBytes) {
    return Invalid(file, fmt::format("header length {} exceeds the {} bytes that follow it (file "
                                     "truncated, or not a safetensors file?)",
                                     n, file_size - kSafetensorsLengthBytes));
  }
  return n;
}

absl::StatusOr<std::vector<uint64_t>> UnsignedArray(const Json* j) {
  std::vector<uint64_t> out;
  if (j == nullptr || !j->is_array()) return absl::InvalidArgumentError("");
  for (const Json& d : *j) {
    if (!d.is_number_unsigned()) return absl::InvalidArgumentError("");
    out.push_back(d.get<uint64_t>());
  }
  return out;
}

absl::StatusOr<SafetensorsTensor> ParseEntry(std::string_view file, const std::string& name,
                                             const Json& e, uint64_t data_bytes) {
  auto bad = [&](std::string_view what) {
    return Invalid(file, fmt::format("tensor '{}' {}", Shown(name), what));
  };
  if (!e.is_object()) return bad(fmt::format("is {}, not an object", Brief(e)));
  SafetensorsTensor t;
  t.name = name;

  auto dt = e.find("dtype");
  if (dt == e.end()) return bad("has no \"dtype\"");
  if (!dt->is_string()) return bad(fmt::format("has dtype {}, not a string", Brief(*dt)));
  auto dtype = DTypeFromSafetensorsName(dt->get_ref<const std::string&>());
  if (!dtype) {
    return bad(fmt::format("has dtype {}, which Cistern does not store (it stores {})", Brief(*dt),
                           kKnownNames));
  }
  t.dtype = *dtype;

  auto sh = e.find("shape");
  if (sh == e.end()) return bad("has no \"shape\"");
  auto shape = UnsignedArray(&*sh);
  if (!shape.ok()) {
    return bad(
        fmt::format("has shape {}; it must be an array of non-negative integers", Brief(*sh)));
  }
  t.shape = *std::move(shape);

  auto of = e.find("data_offsets");
  if (of == e.end()) return bad("has no \"data_offsets\"");
  auto offsets = UnsignedArray(&*of);
  if (!offsets.ok() || offsets->size() != 2) {
    return bad(
        fmt::format("has data_offsets {}; they must be [begin, end], two non-negative "
                    "integers",
                    Brief(*of)));
  }
  t.begin = (*offsets)[0];
  t.end = (*offsets)[1];
  if (t.end < t.begin) {
    return bad(fmt::format("has data_offsets [{}, {}]: end is before begin", t.begin, t.end));
  }
  if (t.end > data_bytes) {
    return bad(
        fmt::format("has data_offsets [{}, {}] but the data area has only {} bytes (file "
                    "truncated?)",
                    t.begin, t.end, data_bytes));
  }
  auto want = store::ShapeBytes(t.shape, DTypeSize(t.dtype));
  if (!want) {
    return bad(fmt::format("has shape {} and dtype {}, whose size overflows 64 bits", Brief(*sh),
                           SafetensorsDTypeName(t.dtype)));
  }
  if (*want != t.nbytes()) {
    return bad(
        fmt::format("has shape {} and dtype {}, which make {} bytes, but data_offsets [{}, "
                    "{}] hold {} bytes",
                    Brief(*sh), SafetensorsDTypeName(t.dtype), *want, t.begin, t.end, t.nbytes()));
  }
  return t;
}

absl::Status ParseMetadata(std::string_view file, const Json& m, SafetensorsMetadata* out) {
  if (!m.is_object()) {
    return Invalid(file, fmt::format("{} is {}, not an object of strings", kMetadataKey, Brief(m)));
  }
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (!it.value().is_string()) {
      return Invalid(file, fmt::format("{} entry '{}' is {}, not a string", kMetadataKey,
                                       Shown(it.key()), Brief(it.value())));
    }
    out->emplace_back(it.key(), it.value().get<std::string>());
  }
  return absl::OkStatus();
}

// Every byte of the data area in exactly one tensor; `tensors` sorted by range.
absl::Status CheckCoverage(std::string_view file, const std::vector<SafetensorsTensor>& tensors,
                           uint64_t data_bytes) {
  uint64_t at = 0;
  const SafetensorsTensor* prev = nullptr;
  for (const SafetensorsTensor& t : tensors) {
    if (t.begin < at) {
      return Invalid(
          file, fmt::format("tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", Shown(prev->name),
                            prev->begin, prev->end, Shown(t.name), t.begin, t.end));
    }
    if (t.begin > at) {
      return Invalid(
          file,
          fmt::format("bytes [{}, {}) of the data area belong to no tensor ({} '{}')", at, t.begin,
                      prev ? "between '" + Shown(prev->name) + "' and" : "before", Shown(t.name)));
    }
    at = t.end;
    prev = &t;
  }
  if (at != data_bytes) {
    return Invalid(file, fmt::format("the data area has {} bytes but the tensors cover only the "
                                     "first {}; the rest belongs to no tensor",
                                     data_bytes, at));
  }
  return absl::OkStatus();
}

// At most kSafetensorsMaxNesting levels of arrays and objects in the JSON
// `text`, counted outside strings; the parser checks the rest. Values built
// from a deeper text were too deep to print or to walk recursively.
absl::Status CheckNesting(std::string_view file, std::string_view text) {
  uint64_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kSafetensorsMaxNesting) {
        return Invalid(file, fmt::format("header nests arrays and objects more than {} deep (at "
                                         "byte {} of the header)",
                                         kSafetensorsMaxNesting, i));
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return absl::OkStatus();
}

// pread exactly `n` bytes at `offset`.
absl::Status PreadAll(int fd, char* out, size_t n, uint64_t offset, std::string_view file) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, out + done, n - done, offset + done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, fmt::format("reading {}", file));
    if (r == 0) {
      return absl::DataLossError(
          fmt::format("{}: file ended at byte {} while reading its header (did it shrink?)", file,
                      offset + done));
    }
    done += r;
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view SafetensorsDTypeName(DType t) {
  auto i = static_cast<size_t>(t);
  return i < kNames.size() ? kNames[i] : std::string_view();
}

std::optional<DType> DTypeFromSafetensorsName(std::string_view name) {
  for (size_t i = 1; i < kNames.size(); ++i) {
    if (kNames[i] == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

absl::StatusOr<SafetensorsFile> ParseSafetensorsHeader(std::string_view file,
                                                       std::string_view bytes, uint64_t file_size) {
  ASSIGN_OR_RETURN(uint64_t n, HeaderLength(file, bytes, file_size));
  if (bytes.size() - kSafetensorsLengthBytes < n) {
    return Invalid(file, fmt::format("only {} of the header's {} bytes were given",
                                     bytes.size() - kSafetensorsLengthBytes, n));
  }
  std::string_view text = bytes.substr(kSafetensorsLengthBytes, n);

  // The parser would take a NUL for the end of the input; JSON has none.
  if (auto nul = text.find('\0'); nul != std::string_view::npos) {
    return Invalid(file, fmt::format("header is not valid JSON: a NUL byte at byte {}", nul));
  }
  RETURN_IF_ERROR(CheckNesting(file, text));
  absl::flat_hash_set<std::string> seen;
  std::string repeated;
  auto note_keys = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth == 1 && event == Json::parse_event_t::key && repeated.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second) repeated = k;
    }
    return true;
  };
  Json j;
  try {
    j = Json::parse(text.begin(), text.end(), note_keys);
  } catch (const Json::exception& e) {
    std::string_view what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    if (auto p = what.find("] "); p != std::string_view::npos) what.remove_prefix(p + 2);
    // "... last read: '<token>'" quotes the token, which may be as long as the header.
    std::string shown(what.substr(0, 4 * kShownBytes));
    if (what.size() > shown.size()) shown += " ...";
    return Invalid(file, fmt::format("header is not valid JSON: {}", shown));
  }
  if (!j.is_object()) {
    return Invalid(file, fmt::format("header is {}, not a JSON object", Brief(j)));
  }
  if (!repeated.empty()) {
    return Invalid(file, fmt::format("'{}' appears twice in the header", Shown(repeated)));
  }

  SafetensorsFile out;
  out.data_start = kSafetensorsLengthBytes + n;
  out.data_bytes = file_size - out.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == kMetadataKey) {
      RETURN_IF_ERROR(ParseMetadata(file, it.value(), &out.metadata));
      continue;
    }
    if (it.key().empty()) return Invalid(file, "a tensor has an empty name");
    ASSIGN_OR_RETURN(SafetensorsTensor t, ParseEntry(file, it.key(), it.value(), out.data_bytes));
    out.tensors.push_back(std::move(t));
  }
  std::stable_sort(out.tensors.begin(), out.tensors.end(), [](const auto& a, const auto& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  RETURN_IF_ERROR(CheckCoverage(file, out.tensors, out.data_bytes));
  return out;
}

absl::StatusOr<SafetensorsFile> ReadSafetensorsHeader(int fd, std::string_view file) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, fmt::format("stat {}", file));
  uint64_t size = st.st_size;
  std::string prefix(std::min<uint64_t>(size, kSafetensorsLengthBytes), '\0');
  RETURN_IF_ERROR(PreadAll(fd, prefix.data(), prefix.size(), 0, file));
  ASSIGN_OR_RETURN(uint64_t n, HeaderLength(file, prefix, size));
  std::string head(kSafetensorsLengthBytes + n, '\0');
  RETURN_IF_ERROR(PreadAll(fd, head.data(), head.size(), 0, file));
  return ParseSafetensorsHeader(file, head, size);
}

absl::StatusOr<std::string> MakeSafetensorsHeader(const std::vector<TensorInfo>& tensors,
                                                  const SafetensorsMetadata& metadata) {
  Json j = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : metadata) {
      if (!IsValidUtf8(k) || !IsValidUtf8(v)) {
        return absl::InvalidArgumentError(
            fmt::format("metadata entry '{}' is not UTF-8", absl::CHexEscape(k)));
      }
      if (m.contains(k)) {
        return absl::InvalidArgumentError(fmt::format("metadata key '{}' appears twice", k));
      }
      m[k] = v;
    }
    j[kMetadataKey] = std::move(m);
  }
  uint64_t at = 0;
  for (const TensorInfo& t : tensors) {
    if (t.name.empty()) return absl::InvalidArgumentError("a tensor has an empty name");
    if (!IsValidUtf8(t.name)) {
      return absl::InvalidArgumentError(
          fmt::format("tensor name '{}' is not UTF-8", absl::CHexEscape(t.name)));
    }
    if (t.name == kMetadataKey) {
      return absl::InvalidArgumentError(
          fmt::format("a tensor is named '{}', which safetensors reserves for metadata", t.name));
    }
    if (j.contains(t.name)) {
      return absl::InvalidArgumentError(fmt::format("tensor '{}' appears twice", t.name));
    }
    std::string_view dtype = SafetensorsDTypeName(t.dtype);
    if (dtype.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("tensor '{}' has unknown dtype {}", t.name, static_cast<int>(t.dtype)));
    }
    auto want = store::ShapeBytes(t.shape, DTypeSize(t.dtype));
    if (!want || *want != t.nbytes) {
      return absl::InvalidArgumentError(fmt::format(
          "tensor '{}' has nbytes {} but its shape and dtype {} make {}", t.name, t.nbytes, dtype,
          want ? fmt::format("{}", *want) : std::string("an overflow")));
    }
    if (t.nbytes > UINT64_MAX - at) {
      return absl::InvalidArgumentError("the tensors' sizes add up to more than 64 bits");
    }
    Json entry = Json::object();
    entry["dtype"] = dtype;
    entry["shape"] = t.shape;
    entry["data_offsets"] = Json::array({at, at + t.nbytes});
    j[t.name] = std::move(entry);
    at += t.nbytes;
  }
  std::string text = j.dump();  // compact; every string was checked to be UTF-8
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(kSafetensorsLengthBytes, '\0');
  for (size_t i = 0; i < kSafetensorsLengthBytes; ++i)
    out[i] = static_cast<char>(text.size() >> (8 * i));
  return out + text;
}

}  // namespace cistern::cli
