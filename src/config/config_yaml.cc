#include "src/config/config_yaml.h"

// The loader walks the YAML node tree and the message descriptor side by side.
// YamlReader::ReadMessage checks each mapping key against the descriptor,
// ReadField handles repetition (a sequence replaces the repeated field), and
// ReadElement either descends into a sub-message or turns one scalar into a
// typed value with ParseFieldScalar, which knows the field's type and its
// size/duration/fraction option. Everything happens in a copy of the target
// message that is swapped in only when the whole document was accepted.
// ApplyOverride walks a dotted key down the same copy, creating sub-messages and
// appending repeated elements on the way, then hands the value to the same
// ReadField/ReadElement code, so a --set value is judged exactly like YAML.
//
// Numbers with units are parsed exactly, without floating point: "1.5GiB" is
// 1 * 2^30 + 5 * 2^30 / 10, and the fractional part must divide evenly.
//
// Reading a YAML text (ParseDocument) takes two passes over it, because
// yaml-cpp 0.7 accepts some texts it should reject and loops forever on
// others. The first pass feeds the parser's events to Prescan, which builds
// nothing and throws a ParserException (a syntax error with line and column)
// at the first of these:
//  - A document that consumed no token. yaml-cpp's document loop ends only at
//    the end of the input, and a token no rule of a node takes (a flow ','
//    outside a flow collection: ",", ",*x", "[a],") is never consumed, so
//    every further document is a null at the same place, forever (LoadAll
//    grew without bound; Load returned a null for the whole text). Every
//    document that consumes a token starts at a new mark, so two documents in
//    a row starting at one mark mean a stuck token: the error names it.
//  - A quoted scalar without its closing quote: the scanner takes the end of
//    the input after a line break for one ("token: \"abc\n" read as "abc ").
//  - More than kMaxNodes nodes.
// The text must also be UTF-8 (yaml-cpp passes invalid bytes through, and
// a protobuf string cannot hold them) and at most kMaxYamlBytes. Only then
// does the second pass, YAML::Load, build the one document's node tree, which
// YamlReader walks; the walk counts the nodes it visits, so that aliases
// (which share a node) cannot make it visit more than kMaxNodes either.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <variant>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "cistern/config_options.pb.h"
#include "fmt/format.h"
#include "google/protobuf/descriptor.h"
#include "src/common/errno_status.h"
#include "src/common/status_macros.h"
#include "src/common/unique_fd.h"
#include "src/common/units.h"
#include "src/common/utf8.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace cistern {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Bounds on what one text may hold (see the top of the file).
constexpr size_t kMaxYamlBytes = kMaxConfigYamlBytes;
constexpr uint64_t kMaxNodes = kMaxConfigYamlNodes;

absl::Status Invalid(std::string msg) { return absl::InvalidArgumentError(std::move(msg)); }

std::string StatusText(const absl::Status& s) { return std::string(s.message()); }

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
// Hand-written rather than absl's: Debian's abseil has its own string_view
// type (absl::debian3::string_view), which std::string_view does not convert to.
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
char ToLower(char c) { return absl::ascii_tolower(static_cast<unsigned char>(c)); }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ToLower(c);
  return out;
}

// The offset of the first byte of `s` that is not part of a well-formed UTF-8
// sequence; s.size() when there is none.
size_t FirstInvalidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto lead = static_cast<uint8_t>(s[i]);
    size_t len = lead < 0x80         ? 1
                 : lead >> 5 == 0x6  ? 2
                 : lead >> 4 == 0xE  ? 3
                 : lead >> 3 == 0x1E ? 4
                                     : 0;
    if (len == 0 || i + len > s.size() || !IsValidUtf8(s.substr(i, len))) return i;
    i += len;
  }
  return i;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ToLower(a[i]) != ToLower(b[i])) return false;
  }
  return true;
}

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

// "12" or "12.5": digits, optionally a point and more digits.
bool IsPlainDecimal(std::string_view s) {
  size_t dot = s.find('.');
  if (dot == std::string_view::npos) return AllDigits(s);
  return AllDigits(s.substr(0, dot)) && AllDigits(s.substr(dot + 1));
}

uint64_t Gcd(uint64_t a, uint64_t b) {
  while (b != 0) a = std::exchange(b, a % b);
  return a;
}

// `number` (a plain decimal) times `mult`, exactly. The error text is a reason
// to be appended to "invalid <what> '<text>': ".
absl::StatusOr<uint64_t> ScaleExactly(std::string_view number, uint64_t mult,
                                      std::string_view unit_name) {
  if (!IsPlainDecimal(number)) return Invalid("expected a non-negative number");
  size_t dot = number.find('.');
  std::string_view int_part = number.substr(0, dot);
  std::string_view frac_part =
      dot == std::string_view::npos ? std::string_view() : number.substr(dot + 1);
  while (!frac_part.empty() && frac_part.back() == '0') frac_part.remove_suffix(1);

  auto too_large = [&] {
    return Invalid(fmt::format("too large (the maximum is {} {})", UINT64_MAX, unit_name));
  };
  uint64_t whole = 0;
  auto [ptr, ec] = std::from_chars(int_part.data(), int_part.data() + int_part.size(), whole);
  if (ec != std::errc() || __builtin_mul_overflow(whole, mult, &whole)) return too_large();
  if (frac_part.empty()) return whole;
  if (frac_part.size() > 19) return Invalid("too many decimal digits");
  uint64_t frac = 0;
  std::from_chars(frac_part.data(), frac_part.data() + frac_part.size(), frac);
  uint64_t pow10 = 1;
  for (size_t i = 0; i < frac_part.size(); ++i) pow10 *= 10;
  // frac / pow10 * mult is whole iff frac is a multiple of pow10 / gcd(pow10, mult).
  uint64_t g = Gcd(pow10, mult);
  if (frac % (pow10 / g) != 0) return Invalid(fmt::format("not a whole number of {}", unit_name));
  uint64_t extra = (frac / (pow10 / g)) * (mult / g);  // < mult, cannot overflow
  uint64_t total;
  if (__builtin_add_overflow(whole, extra, &total)) return too_large();
  return total;
}

struct Unit {
  std::string_view name;
  uint64_t mult;
};

constexpr uint64_t kKB = 1000, kMB = kKB * 1000, kGB = kMB * 1000, kTB = kGB * 1000;
constexpr Unit kSizeUnits[] = {
    {"", 1},      {"B", 1},      {"K", kKB},   {"KB", kKB},   {"M", kMB},   {"MB", kMB},
    {"G", kGB},   {"GB", kGB},   {"T", kTB},   {"TB", kTB},   {"Ki", kKiB}, {"KiB", kKiB},
    {"Mi", kMiB}, {"MiB", kMiB}, {"Gi", kGiB}, {"GiB", kGiB}, {"Ti", kTiB}, {"TiB", kTiB},
};
constexpr Unit kDurationUnits[] = {
    {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000},
};

// Splits "<number> <unit>" and scales it by the unit found in `units`.
template <size_t N>
absl::StatusOr<uint64_t> ParseWithUnit(std::string_view text, const Unit (&units)[N],
                                       std::string_view what, std::string_view unit_name) {
  auto fail = [&](std::string_view reason) {
    return Invalid(fmt::format("invalid {} '{}': {}", what, text, reason));
  };
  std::string_view s = Trim(text);
  if (s.empty()) return fail("empty");
  if (s.front() == '-') return fail("must not be negative");
  size_t i = 0;
  while (i < s.size() && (IsDigit(s[i]) || s[i] == '.')) ++i;
  std::string_view number = s.substr(0, i);
  std::string_view unit = Trim(s.substr(i));
  if (number.empty()) return fail("expected a number, optionally followed by a unit");
  for (const Unit& u : units) {
    if (!EqualsIgnoreCase(unit, u.name)) continue;
    absl::StatusOr<uint64_t> v = ScaleExactly(number, u.mult, unit_name);
    if (!v.ok()) return fail(StatusText(v.status()));
    return v;
  }
  std::string names;
  for (const Unit& u : units) {
    if (u.name.empty()) continue;
    if (!names.empty()) names += ", ";
    names += u.name;
  }
  return fail(fmt::format("unknown unit '{}' (expected one of {})", unit, names));
}

// One parsed scalar, typed as the field it is for.
using ScalarValue = std::variant<int32_t, int64_t, uint32_t, uint64_t, double, float, bool,
                                 std::string, const EnumValueDescriptor*>;

// Whether `f` has the bool field option `ext` (config::size and the like).
template <typename Ext>
bool Has(const FieldDescriptor* f, const Ext& ext) {
  return f->options().GetExtension(ext);
}

// "LogLevel" -> "LOG_LEVEL_", "HTTPMode" -> "HTTP_MODE_".
std::string EnumPrefix(const EnumDescriptor* e) {
  const std::string& name = e->name();
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool upper = c >= 'A' && c <= 'Z';
    if (upper && i > 0) {
      char prev = name[i - 1];
      bool prev_upper = prev >= 'A' && prev <= 'Z';
      bool next_lower = i + 1 < name.size() && name[i + 1] >= 'a' && name[i + 1] <= 'z';
      if (!prev_upper || next_lower) out += '_';
    }
    out += absl::ascii_toupper(static_cast<unsigned char>(c));
  }
  return out + "_";
}

// The value's name without the enum's prefix, when it has the prefix.
std::string_view ShortEnumName(const EnumValueDescriptor* v, std::string_view prefix) {
  std::string_view name = v->name();
  if (name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix) {
    name.remove_prefix(prefix.size());
  }
  return name;
}

bool IsUnspecified(std::string_view short_name) { return short_name == "UNSPECIFIED"; }

std::string EnumChoices(const EnumDescriptor* e) {
  std::string prefix = EnumPrefix(e);
  std::string out;
  for (int i = 0; i < e->value_count(); ++i) {
    std::string_view name = ShortEnumName(e->value(i), prefix);
    if (IsUnspecified(name)) continue;
    if (!out.empty()) out += ", ";
    out += Lower(name);
  }
  return out;
}

// What a scalar for `f` must look like, for error messages.
std::string Expectation(const FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return "a string";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "a boolean (true/false, yes/no, on/off)";
    case FieldDescriptor::CPPTYPE_ENUM:
      return "one of " + EnumChoices(f->enum_type());
    case FieldDescriptor::CPPTYPE_FLOAT:
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return Has(f, config::fraction) ? "a fraction (0..1 or 0%..100%)" : "a number";
    default:
      if (Has(f, config::size)) return "a byte size (an integer, or e.g. 4GB, 512MiB)";
      if (Has(f, config::duration_ms))
        return "a duration (milliseconds, or e.g. 250ms, 30s, 2m, 1h)";
      bool is_unsigned = f->cpp_type() == FieldDescriptor::CPPTYPE_UINT32 ||
                         f->cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
      return is_unsigned ? "a non-negative integer" : "an integer";
  }
}

absl::StatusOr<ScalarValue> ParseEnum(const EnumDescriptor* e, std::string_view text) {
  std::string prefix = EnumPrefix(e);
  for (int i = 0; i < e->value_count(); ++i) {
    const EnumValueDescriptor* v = e->value(i);
    std::string_view short_name = ShortEnumName(v, prefix);
    if (!EqualsIgnoreCase(text, v->name()) && !EqualsIgnoreCase(text, short_name)) continue;
    if (IsUnspecified(short_name)) break;
    return ScalarValue(v);
  }
  return Invalid(fmt::format("expected one of {}, found '{}'", EnumChoices(e), text));
}

// An integer for field `f` (int32/int64/uint32/uint64): `negative` ? -magnitude
// : magnitude, range-checked. `text` is what the user wrote, for the message.
absl::StatusOr<ScalarValue> MakeInteger(const FieldDescriptor* f, bool negative, uint64_t magnitude,
                                        std::string_view text) {
  struct Range {
    std::string_view type;
    uint64_t max_negative;  // magnitude of the minimum
    uint64_t max;
  };
  constexpr uint64_t kI32 = std::numeric_limits<int32_t>::max();
  constexpr uint64_t kI64 = std::numeric_limits<int64_t>::max();
  constexpr uint64_t kU32 = std::numeric_limits<uint32_t>::max();
  Range r = f->cpp_type() == FieldDescriptor::CPPTYPE_INT32    ? Range{"int32", kI32 + 1, kI32}
            : f->cpp_type() == FieldDescriptor::CPPTYPE_INT64  ? Range{"int64", kI64 + 1, kI64}
            : f->cpp_type() == FieldDescriptor::CPPTYPE_UINT32 ? Range{"uint32", 0, kU32}
                                                               : Range{"uint64", 0, UINT64_MAX};
  if (negative && r.max_negative == 0) {
    return Invalid(fmt::format("expected a non-negative integer, found '{}'", text));
  }
  if (magnitude > (negative ? r.max_negative : r.max)) {
    std::string min = r.max_negative == 0 ? "0" : fmt::format("-{}", r.max_negative);
    return Invalid(fmt::format("'{}' is out of range for {} ({}..{})", text, r.type, min, r.max));
  }
  // Two's complement: 0 - magnitude is the negative value, including the minimum.
  uint64_t bits = negative ? 0 - magnitude : magnitude;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return ScalarValue(static_cast<int32_t>(static_cast<int64_t>(bits)));
    case FieldDescriptor::CPPTYPE_INT64:
      return ScalarValue(static_cast<int64_t>(bits));
    case FieldDescriptor::CPPTYPE_UINT32:
      return ScalarValue(static_cast<uint32_t>(bits));
    default:
      return ScalarValue(bits);
  }
}

// Integers: an optional '-' and decimal digits; sizes and durations with units.
absl::StatusOr<ScalarValue> ParseInteger(const FieldDescriptor* f, std::string_view text) {
  if (Has(f, config::size) || Has(f, config::duration_ms)) {
    ASSIGN_OR_RETURN(uint64_t v, Has(f, config::size) ? ParseSize(text) : ParseDurationMs(text));
    return MakeInteger(f, false, v, text);
  }
  bool negative = !text.empty() && text.front() == '-';
  std::string_view digits = negative ? text.substr(1) : text;
  if (!AllDigits(digits)) {
    return Invalid(fmt::format("expected {}, found '{}'", Expectation(f), text));
  }
  uint64_t magnitude = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude);
  if (ec != std::errc()) magnitude = UINT64_MAX;  // beyond every range
  return MakeInteger(f, negative, magnitude, text);
}

absl::StatusOr<ScalarValue> ParseFloating(const FieldDescriptor* f, std::string_view text) {
  double d = 0;
  if (Has(f, config::fraction)) {
    ASSIGN_OR_RETURN(d, ParseFraction(text));
  } else {
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
    if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() ||
        !std::isfinite(d)) {
      return Invalid(fmt::format("expected a finite number, found '{}'", text));
    }
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) return ScalarValue(d);
  if (std::fabs(d) > std::numeric_limits<float>::max()) {
    return Invalid(fmt::format("{} is out of range for float", text));
  }
  return ScalarValue(static_cast<float>(d));
}

// Turns the text of one YAML scalar into a value for field `f`. The error text
// says what was expected and what was found, but not where.
absl::StatusOr<ScalarValue> ParseFieldScalar(const FieldDescriptor* f, std::string_view raw) {
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
    // The value is not shown: it may be a secret (token).
    if (f->type() == FieldDescriptor::TYPE_STRING && !IsValidUtf8(raw)) {
      return Invalid(fmt::format("expected a UTF-8 string; byte {} of the value is not UTF-8",
                                 FirstInvalidUtf8(raw)));
    }
    return ScalarValue(std::string(raw));
  }
  std::string_view text = Trim(raw);
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      for (std::string_view t : {"true", "yes", "on"}) {
        if (EqualsIgnoreCase(text, t)) return ScalarValue(true);
      }
      for (std::string_view t : {"false", "no", "off"}) {
        if (EqualsIgnoreCase(text, t)) return ScalarValue(false);
      }
      return Invalid(fmt::format("expected {}, found '{}'", Expectation(f), text));
    case FieldDescriptor::CPPTYPE_ENUM:
      return ParseEnum(f->enum_type(), text);
    case FieldDescriptor::CPPTYPE_FLOAT:
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return ParseFloating(f, text);
    default:
      return ParseInteger(f, text);
  }
}

// Stores `v` into `f`: set for a singular field; for a repeated one, replace
// element `index`, or append when `index` equals the size.
void Store(Message* msg, const FieldDescriptor* f, ScalarValue v, int index) {
  const Reflection* r = msg->GetReflection();
  bool add = f->is_repeated() && index == r->FieldSize(*msg, f);
  bool set_at = f->is_repeated() && !add;
#define CISTERN_STORE(Kind, type)                                      \
  if (add) {                                                           \
    r->Add##Kind(msg, f, std::get<type>(std::move(v)));                \
  } else if (set_at) {                                                 \
    r->SetRepeated##Kind(msg, f, index, std::get<type>(std::move(v))); \
  } else {                                                             \
    r->Set##Kind(msg, f, std::get<type>(std::move(v)));                \
  }                                                                    \
  return
  using F = FieldDescriptor;
  switch (f->cpp_type()) {
    // clang-format off
    case F::CPPTYPE_INT32: CISTERN_STORE(Int32, int32_t);
    case F::CPPTYPE_INT64: CISTERN_STORE(Int64, int64_t);
    case F::CPPTYPE_UINT32: CISTERN_STORE(UInt32, uint32_t);
    case F::CPPTYPE_UINT64: CISTERN_STORE(UInt64, uint64_t);
    case F::CPPTYPE_DOUBLE: CISTERN_STORE(Double, double);
    case F::CPPTYPE_FLOAT: CISTERN_STORE(Float, float);
    case F::CPPTYPE_BOOL: CISTERN_STORE(Bool, bool);
    case F::CPPTYPE_STRING: CISTERN_STORE(String, std::string);
    case F::CPPTYPE_ENUM: CISTERN_STORE(Enum, const EnumValueDescriptor*);
    case F::CPPTYPE_MESSAGE: break;
      // clang-format on
  }
#undef CISTERN_STORE
}

std::string NodeKind(const YAML::Node& node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a sequence";
  if (node.IsNull()) return "null";
  return fmt::format("'{}'", node.Scalar());
}

std::string ValidKeys(const Descriptor* d) {
  std::string out;
  for (int i = 0; i < d->field_count(); ++i) {
    if (i > 0) out += ", ";
    out += d->field(i)->name();
  }
  return out;
}

absl::Status UnknownKey(const Descriptor* d, const std::string& path, std::string_view where) {
  return Invalid(fmt::format("unknown key '{}'{}; valid keys of {}: {}", path, where, d->name(),
                             ValidKeys(d)));
}

Message* SubMessage(Message* msg, const FieldDescriptor* f, int index) {
  const Reflection* r = msg->GetReflection();
  if (!f->is_repeated()) return r->MutableMessage(msg, f);
  if (index == r->FieldSize(*msg, f)) return r->AddMessage(msg, f);
  return r->MutableRepeatedMessage(msg, f, index);
}

class YamlReader {
 public:
  // `cite_lines`: whether errors name the node's line and column (false for
  // values that did not come from a document the user can open).
  explicit YamlReader(bool cite_lines) : cite_lines_(cite_lines) {}

  // Fills `msg` from a mapping (or nothing, for null).
  absl::Status ReadMessage(const YAML::Node& node, const std::string& path, Message* msg) const {
    const Descriptor* d = msg->GetDescriptor();
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      if (path.empty()) {
        return Invalid(fmt::format("the document must be a mapping of {} keys, found {}{}",
                                   d->name(), NodeKind(node), Where(node)));
      }
      return Error(
          node, path,
          fmt::format("expected a mapping of {} keys, found {}", d->name(), NodeKind(node)));
    }
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const YAML::Node& key = kv.first;
      if (!key.IsScalar()) {
        return Error(key, path.empty() ? "(top level)" : path, "mapping keys must be plain names");
      }
      const std::string& name = key.Scalar();
      std::string child = path.empty() ? name : path + "." + name;
      if (!seen.insert(name).second) {
        return Invalid(fmt::format("duplicate key '{}'{}", child, Where(key)));
      }
      const FieldDescriptor* f = d->FindFieldByName(name);
      if (f == nullptr) return UnknownKey(d, child, Where(key));
      if (kv.second.IsNull() && !f->is_repeated() &&
          f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
        // A null's mark is where the parser noticed it, often the next line.
        return Error(key, child, fmt::format("expected {}, found null", Expectation(f)));
      }
      RETURN_IF_ERROR(ReadField(kv.second, child, msg, f));
    }
    return absl::OkStatus();
  }

  // Fills the whole of field `f`: a repeated field from a sequence (replacing
  // its contents), a singular one from one node.
  absl::Status ReadField(const YAML::Node& node, const std::string& path, Message* msg,
                         const FieldDescriptor* f) const {
    if (f->is_map()) return Error(node, path, "map fields are not supported");
    if (!f->is_repeated()) return ReadElement(node, path, msg, f, -1);
    const Reflection* r = msg->GetReflection();
    if (node.IsNull()) {
      r->ClearField(msg, f);
      return absl::OkStatus();
    }
    if (!node.IsSequence()) {
      std::string of = f->message_type() != nullptr ? "mappings" : "values";
      return Error(node, path,
                   fmt::format("expected a sequence of {}, found {}", of, NodeKind(node)));
    }
    r->ClearField(msg, f);
    int i = 0;
    for (const auto& element : node) {
      RETURN_IF_ERROR(ReadElement(element, fmt::format("{}[{}]", path, i), msg, f, i));
      ++i;
    }
    return absl::OkStatus();
  }

  // Fills a singular field (`index` < 0) or element `index` of a repeated one
  // (appending when `index` equals its size) from one node.
  absl::Status ReadElement(const YAML::Node& node, const std::string& path, Message* msg,
                           const FieldDescriptor* f, int index) const {
    if (++visited_ > kMaxNodes) {
      return Error(node, path,
                   fmt::format("the document has more than {} values (aliases count each time "
                               "they are used)",
                               kMaxNodes));
    }
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      return ReadMessage(node, path, SubMessage(msg, f, index));
    }
    if (!node.IsScalar()) {
      std::string what =
          f->is_repeated() || node.IsNull() ? Expectation(f) : "a single value: " + Expectation(f);
      return Error(node, path, fmt::format("expected {}, found {}", what, NodeKind(node)));
    }
    absl::StatusOr<ScalarValue> v = ParseFieldScalar(f, node.Scalar());
    if (!v.ok()) return Error(node, path, StatusText(v.status()));
    Store(msg, f, *std::move(v), index);
    return absl::OkStatus();
  }

 private:
  std::string Where(const YAML::Node& node) const {
    YAML::Mark m = node.Mark();
    if (!cite_lines_ || m.is_null()) return "";
    return fmt::format(" at line {}, column {}", m.line + 1, m.column + 1);
  }

  absl::Status Error(const YAML::Node& node, const std::string& path, std::string_view what) const {
    return Invalid(fmt::format("'{}'{}: {}", path, Where(node), what));
  }

  bool cite_lines_;
  mutable uint64_t visited_ = 0;  // ReadElement calls, bounded by kMaxNodes
};

absl::Status SyntaxError(const YAML::Exception& e, std::string_view context) {
  if (e.mark.is_null()) return Invalid(fmt::format("{}: {}", context, e.msg));
  return Invalid(fmt::format("{} at line {}, column {}: {}", context, e.mark.line + 1,
                             e.mark.column + 1, e.msg));
}

// Where `pos` is in `text`, as a yaml-cpp mark (0-based line and column).
YAML::Mark MarkAt(std::string_view text, size_t pos) {
  YAML::Mark m;
  m.pos = static_cast<int>(pos);
  for (size_t i = 0; i < pos && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++m.line;
      m.column = 0;
    } else {
      ++m.column;
    }
  }
  return m;
}

// The offset just past the closing quote of the quoted scalar that opens at
// `open` (text[open] is ' or "), or npos when the text ends first.
size_t QuotedScalarEnd(std::string_view text, size_t open) {
  char quote = text[open];
  for (size_t i = open + 1; i < text.size(); ++i) {
    if (quote == '"' && text[i] == '\\') {
      ++i;  // an escape: the next character is never the closing quote
    } else if (text[i] == quote) {
      if (quote == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
        ++i;  // '' is a quote inside a single-quoted scalar
        continue;
      }
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// The first pass (see the top of the file): the parser's events, checked;
// throws YAML::ParserException at the first problem. Counts the documents.
class Prescan : public YAML::EventHandler {
 public:
  explicit Prescan(std::string_view text) : text_(text) {}

  int documents() const { return documents_; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (documents_ > 0 && mark.pos == last_start_.pos) {
      std::string token = mark.pos >= 0 && static_cast<size_t>(mark.pos) < text_.size()
                              ? fmt::format("'{}'", text_[mark.pos])
                              : std::string("token");
      throw YAML::ParserException(
          mark, fmt::format(
                    "unexpected {}{}", token,
                    token == "','" ? " (a ',' separates entries only inside [...] or {...})" : ""));
    }
    last_start_ = mark;
    ++documents_;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { Count(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { Count(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t,
                const std::string&) override {
    Count(mark);
    // Quoted scalars have the tag "!"; the mark is their opening quote.
    if (tag != "!" || mark.pos < 0 || static_cast<size_t>(mark.pos) >= text_.size()) return;
    char c = text_[mark.pos];
    if ((c == '"' || c == '\'') &&
        QuotedScalarEnd(text_, static_cast<size_t>(mark.pos)) == std::string_view::npos) {
      throw YAML::ParserException(
          mark, fmt::format("the {}-quoted string that starts here has no closing {}",
                            c == '"' ? "double" : "single", c));
    }
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    Count(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Count(mark);
  }
  void OnMapEnd() override {}

 private:
  void Count(const YAML::Mark& mark) {
    if (++nodes_ > kMaxNodes) {
      throw YAML::ParserException(mark, fmt::format("more than {} values", kMaxNodes));
    }
  }

  std::string_view text_;
  int documents_ = 0;
  YAML::Mark last_start_;
  uint64_t nodes_ = 0;
};

// The one document of `text` (a null node for an empty text). InvalidArgument
// for a text above kMaxYamlBytes and for more than one document; for a syntax
// error, what Prescan rejects and bytes that are not UTF-8, InvalidArgument
// "<context> at line L, column C: <what>".
absl::StatusOr<YAML::Node> ParseDocument(std::string_view text, std::string_view context) {
  if (text.size() > kMaxYamlBytes) {
    return Invalid(
        fmt::format("the YAML text is {} bytes; the limit is {}", text.size(), kMaxYamlBytes));
  }
  if (size_t bad = FirstInvalidUtf8(text); bad < text.size()) {
    YAML::Mark m = MarkAt(text, bad);
    return Invalid(
        fmt::format("{} at line {}, column {}: byte 0x{:02x} is not UTF-8 (the text "
                    "must be UTF-8)",
                    context, m.line + 1, m.column + 1, static_cast<uint8_t>(text[bad])));
  }
  std::string copy(text);
  try {
    std::istringstream in(copy);
    YAML::Parser parser(in);
    Prescan prescan(copy);
    while (parser.HandleNextDocument(prescan)) {
    }
    if (prescan.documents() > 1) {
      return Invalid(fmt::format("expected one YAML document, found {}", prescan.documents()));
    }
    if (prescan.documents() == 0) return YAML::Node();
    return YAML::Load(copy);
  } catch (const YAML::Exception& e) {
    return SyntaxError(e, context);
  }
}

std::unique_ptr<Message> CopyOf(const Message& msg) {
  std::unique_ptr<Message> copy(msg.New());
  copy->CopyFrom(msg);
  return copy;
}

void Commit(Message* copy, Message* msg) { msg->GetReflection()->Swap(copy, msg); }

// Walks `components` (the dotted KEY of an override) from `msg` and applies
// `value` at the end.
absl::Status ApplyPath(const std::vector<std::string_view>& components, std::string_view value,
                       Message* msg) {
  YamlReader reader(/*cite_lines=*/false);
  std::string path;
  for (size_t i = 0; i < components.size(); ++i) {
    const Descriptor* d = msg->GetDescriptor();
    std::string_view name = components[i];
    path += (path.empty() ? "" : ".") + std::string(name);
    const FieldDescriptor* f = d->FindFieldByName(std::string(name));
    if (f == nullptr) return UnknownKey(d, path, "");
    if (f->is_map()) return Invalid(fmt::format("'{}': map fields are not supported", path));
    bool last = i + 1 == components.size();

    int index = -1;
    if (f->is_repeated() && !last) {
      std::string_view idx = components[++i];
      int size = msg->GetReflection()->FieldSize(*msg, f);
      if (!AllDigits(idx)) {
        return Invalid(fmt::format("'{}' is a list; expected an element index after it, found '{}'",
                                   path, idx));
      }
      uint64_t n = 0;
      auto [ptr, ec] = std::from_chars(idx.data(), idx.data() + idx.size(), n);
      if (ec != std::errc() || n > static_cast<uint64_t>(size)) {
        return Invalid(fmt::format(
            "index {} of '{}' is out of range: it has {} element(s), and index {} appends one", idx,
            path, size, size));
      }
      index = static_cast<int>(n);
      path += fmt::format("[{}]", index);
      last = i + 1 == components.size();
    }

    if (last) {
      bool whole_value =
          f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE || (f->is_repeated() && index < 0);
      if (!whole_value)
        return reader.ReadElement(YAML::Node(std::string(value)), path, msg, f, index);
      absl::StatusOr<YAML::Node> node =
          ParseDocument(value, fmt::format("the value for '{}' is not valid YAML", path));
      if (!node.ok()) {
        if (absl::StrContains(node.status().message(), "not valid YAML")) return node.status();
        return Invalid(
            fmt::format("the value for '{}': {}", path, std::string(node.status().message())));
      }
      if (index >= 0) return reader.ReadElement(*node, path, msg, f, index);
      return reader.ReadField(*node, path, msg, f);
    }
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
      return Invalid(fmt::format("'{}' is a {}, not a message; it has no key '{}'", path,
                                 f->type_name(), components[i + 1]));
    }
    msg = SubMessage(msg, f, index);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(std::string_view text) {
  return ParseWithUnit(text, kSizeUnits, "size", "bytes");
}

absl::StatusOr<uint64_t> ParseDurationMs(std::string_view text) {
  return ParseWithUnit(text, kDurationUnits, "duration", "milliseconds");
}

absl::StatusOr<double> ParseFraction(std::string_view text) {
  auto fail = [&](std::string_view reason) {
    return Invalid(fmt::format("invalid fraction '{}': {}", text, reason));
  };
  std::string_view s = Trim(text);
  bool percent = !s.empty() && s.back() == '%';
  if (percent) s = Trim(s.substr(0, s.size() - 1));
  if (s.empty()) return fail("empty");
  if (s.front() == '-') return fail("must not be negative");
  if (!IsPlainDecimal(s)) return fail("expected a number between 0 and 1, or a percentage");
  double d = 0;
  std::from_chars(s.data(), s.data() + s.size(), d);
  if (percent) {
    if (d > 100) return fail("a percentage must be between 0% and 100%");
    return d / 100;
  }
  if (d > 1) return fail("must be between 0 and 1 (write a percentage as e.g. 90%)");
  return d;
}

absl::Status LoadYamlString(std::string_view yaml, Message* msg) {
  ASSIGN_OR_RETURN(YAML::Node doc, ParseDocument(yaml, "YAML syntax error"));
  if (doc.IsNull()) return absl::OkStatus();
  try {
    std::unique_ptr<Message> copy = CopyOf(*msg);
    RETURN_IF_ERROR(YamlReader(/*cite_lines=*/true).ReadMessage(doc, "", copy.get()));
    Commit(copy.get(), msg);
    return absl::OkStatus();
  } catch (const YAML::Exception& e) {
    return SyntaxError(e, "YAML syntax error");
  }
}

absl::Status LoadYamlFile(const std::string& path, Message* msg) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, fmt::format("cannot open config file '{}'", path));
  struct stat st;
  if (::fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return Invalid(fmt::format("config file '{}' is a directory", path));
  }
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, fmt::format("cannot read config file '{}'", path));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxConfigYamlBytes) {  // a device or a pipe may never end
      return Invalid(fmt::format("config file '{}' is larger than the limit of {} bytes", path,
                                 kMaxConfigYamlBytes));
    }
  }
  absl::Status s = LoadYamlString(text, msg);
  if (s.ok()) return s;
  return absl::Status(s.code(), fmt::format("{}: {}", path, StatusText(s)));
}

absl::Status ApplyOverride(std::string_view assignment, Message* msg) {
  size_t eq = assignment.find('=');
  if (eq == std::string_view::npos) {
    return Invalid(fmt::format("override '{}' must have the form KEY=VALUE", assignment));
  }
  std::string_view key = Trim(assignment.substr(0, eq));
  std::string_view value = assignment.substr(eq + 1);
  std::vector<std::string_view> components;
  for (size_t start = 0;;) {
    size_t dot = key.find('.', start);
    components.push_back(key.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (components.back().empty()) {
      return Invalid(fmt::format("override '{}': the key has an empty component", assignment));
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  std::unique_ptr<Message> copy = CopyOf(*msg);
  try {
    RETURN_IF_ERROR(ApplyPath(components, value, copy.get()));
  } catch (const YAML::Exception& e) {
    return SyntaxError(e, fmt::format("override '{}'", assignment));
  }
  Commit(copy.get(), msg);
  return absl::OkStatus();
}

namespace {

void EmitScalar(YAML::Emitter& out, const google::protobuf::Message& msg,
                const google::protobuf::FieldDescriptor* f, int index) {
  using FD = google::protobuf::FieldDescriptor;
  const auto* r = msg.GetReflection();
  bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FD::CPPTYPE_INT32:
      out << (rep ? r->GetRepeatedInt32(msg, f, index) : r->GetInt32(msg, f));
      break;
    case FD::CPPTYPE_INT64:
      out << (rep ? r->GetRepeatedInt64(msg, f, index) : r->GetInt64(msg, f));
      break;
    case FD::CPPTYPE_UINT32:
      out << (rep ? r->GetRepeatedUInt32(msg, f, index) : r->GetUInt32(msg, f));
      break;
    case FD::CPPTYPE_UINT64:
      out << (rep ? r->GetRepeatedUInt64(msg, f, index) : r->GetUInt64(msg, f));
      break;
    case FD::CPPTYPE_DOUBLE:
      out << (rep ? r->GetRepeatedDouble(msg, f, index) : r->GetDouble(msg, f));
      break;
    case FD::CPPTYPE_FLOAT:
      out << (rep ? r->GetRepeatedFloat(msg, f, index) : r->GetFloat(msg, f));
      break;
    case FD::CPPTYPE_BOOL:
      out << (rep ? r->GetRepeatedBool(msg, f, index) : r->GetBool(msg, f));
      break;
    case FD::CPPTYPE_ENUM:
      out << EnumValueName(rep ? r->GetRepeatedEnum(msg, f, index) : r->GetEnum(msg, f));
      break;
    case FD::CPPTYPE_STRING:
      out << YAML::DoubleQuoted
          << (rep ? r->GetRepeatedString(msg, f, index) : r->GetString(msg, f));
      break;
    case FD::CPPTYPE_MESSAGE:
      break;
  }
}

void EmitMessage(YAML::Emitter& out, const google::protobuf::Message& msg) {
  using FD = google::protobuf::FieldDescriptor;
  const auto* d = msg.GetDescriptor();
  const auto* r = msg.GetReflection();
  out << YAML::BeginMap;
  for (int i = 0; i < d->field_count(); ++i) {
    const FD* f = d->field(i);
    if (f->is_repeated()) {
      int n = r->FieldSize(msg, f);
      if (n == 0) continue;
      out << YAML::Key << f->name() << YAML::Value << YAML::BeginSeq;
      for (int j = 0; j < n; ++j) {
        if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
          EmitMessage(out, r->GetRepeatedMessage(msg, f, j));
        } else {
          EmitScalar(out, msg, f, j);
        }
      }
      out << YAML::EndSeq;
      continue;
    }
    if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
      if (!r->HasField(msg, f)) continue;
      out << YAML::Key << f->name() << YAML::Value;
      EmitMessage(out, r->GetMessage(msg, f));
      continue;
    }
    if (f->has_presence() && !r->HasField(msg, f)) continue;
    if (f->cpp_type() == FD::CPPTYPE_ENUM && r->GetEnumValue(msg, f) == 0) continue;
    out << YAML::Key << f->name() << YAML::Value;
    EmitScalar(out, msg, f, -1);
  }
  out << YAML::EndMap;
}

}  // namespace

std::string ToYaml(const google::protobuf::Message& msg) {
  YAML::Emitter out;
  EmitMessage(out, msg);
  return std::string(out.c_str()) + "\n";
}

std::string EnumValueName(const google::protobuf::EnumValueDescriptor* v) {
  return Lower(ShortEnumName(v, EnumPrefix(v->type())));
}

}  // namespace cistern
