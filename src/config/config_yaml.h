// Strict loading of YAML into protobuf messages: the one way every Cistern
// process reads its configuration (schema: proto/cistern/config.proto).
//
// Mapping. A YAML mapping fills a message; each key must be the exact
// (snake_case) name of a field of that message. A nested mapping fills a
// message field, merging into what is already there. A sequence fills a
// repeated field and replaces its previous contents; repeated messages take a
// sequence of mappings. A null value (`key:` with nothing after it) is allowed
// only for message fields (leaves it present and otherwise unchanged) and
// repeated fields (clears them); a scalar field needs a value (write '' for an
// empty string). Fields set from YAML get presence, so proto3 `optional` fields
// read back as set. Map fields are not supported.
//
// Scalars, by field type:
//   string          the scalar's text, whatever it looks like; it must be UTF-8.
//   bytes           the scalar's text.
//   bool            true/false, yes/no, on/off (any case).
//   integers        decimal digits with an optional '-'; no fractions, no
//                   exponents; '-' is rejected for unsigned fields, and values
//                   outside the field's range (int32, uint32, ...) are rejected.
//   float, double   a finite number: "-2.5", "1e-3".
//   enum            the value's full name, or its name without the enum's
//                   prefix (LogLevel -> LOG_LEVEL_), in any case: "info",
//                   "LOG_LEVEL_INFO". A value named *_UNSPECIFIED is rejected.
// Field options change how integer and floating fields read a scalar:
//   (cistern.config.size)         integer fields accept ParseSize strings.
//   (cistern.config.duration_ms)  integer fields accept ParseDurationMs strings.
//   (cistern.config.fraction)     float/double fields accept ParseFraction.
//
// Errors. Every function returns OK or InvalidArgument, except that
// LoadYamlFile passes on I/O failures (NotFound, PermissionDenied, or the code
// for the errno). The message names the key path in the form
// `tiers[1].size`, the line and column when the value came from a YAML
// document, and what was expected: an unknown key lists the valid keys of its
// message, a bad enum name lists the accepted names. Duplicate keys in one
// mapping, a top-level document that is not a mapping, and a stream of more
// than one document are errors. On any error `*msg` is left exactly as it was:
// loading happens in a copy that replaces `*msg` only on success.
//
// Bounds. A YAML text (a file, or a --set value read as YAML) must be UTF-8
// and at most kMaxConfigYamlBytes, and holds at most kMaxConfigYamlNodes
// values, counting an alias each time it is used. Syntax errors (with line and
// column) include what yaml-cpp 0.7 lets through: a token no rule takes, such
// as a flow ',' outside [...] or {...} (yaml-cpp loops on it forever, or reads
// the text as null), and a quoted string with no closing quote.
//
// The functions are thread-safe; `msg` must not be used concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"

namespace cistern {

inline constexpr size_t kMaxConfigYamlBytes = 1 << 20;
inline constexpr uint64_t kMaxConfigYamlNodes = 100'000;

// Loads the YAML file at `path` into `*msg`. NotFound / PermissionDenied (the
// message names the path) when it cannot be opened; InvalidArgument, prefixed
// with the path, for a directory, for YAML syntax errors (with line and column)
// and for anything the rules above reject. An empty file leaves `*msg`
// unchanged.
absl::Status LoadYamlFile(const std::string& path, google::protobuf::Message* msg);

// As LoadYamlFile, for YAML text. An empty or null document is OK and leaves
// `*msg` unchanged.
absl::Status LoadYamlString(std::string_view yaml, google::protobuf::Message* msg);

// Applies one command-line override `KEY=VALUE` (`--set KEY=VALUE`) to `*msg`.
// KEY is a dotted path of field names; after a repeated field a numeric
// component picks an element: `tiers.0.size=4GB`, `allowed_uids.1=1000`.
// An index equal to the field's current size appends a new element; a larger
// one is an error. When KEY names a scalar (or one element of a repeated
// scalar field), VALUE is that scalar's text, read exactly as a YAML scalar
// for that field would be (`recovery.on_corrupt_object=drop`); it is taken
// verbatim, so `token=` sets the empty string (a string must still be UTF-8). When KEY names a
// message, an element of a repeated message, or a whole repeated field, VALUE is parsed as YAML
// (`tiers.1={name: ssd, size: 1GiB}`, `allowed_uids=[0, 1000]`).
absl::Status ApplyOverride(std::string_view assignment, google::protobuf::Message* msg);

// The name the loader accepts and ToYaml writes for an enum value: the value's
// name without the enum's prefix, lower-case. The prefix is the enum's name in
// upper snake case, an acronym kept whole: LogLevel's LOG_LEVEL_INFO is
// "info", HTTPMode's HTTP_MODE_ON is "on".
std::string EnumValueName(const google::protobuf::EnumValueDescriptor* v);

// Renders `msg` as YAML that LoadYamlString reads back to an equal message:
// set fields only (plus every scalar of proto3 messages with its value), enums
// by their short lower-case name.
std::string ToYaml(const google::protobuf::Message& msg);

// A byte count: a non-negative number with an optional unit, case-insensitive,
// with optional space between: B; K/KB, M/MB, G/GB, T/TB (powers of 1000);
// Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB (powers of 1024). No unit means bytes. A
// decimal ("1.5GiB") is allowed when the result is a whole number of bytes.
// InvalidArgument for empty input, negatives, unknown units, junk, fractional
// bytes and results above UINT64_MAX.
absl::StatusOr<uint64_t> ParseSize(std::string_view text);

// A duration in milliseconds: a non-negative number with an optional unit ms,
// s, m or h (any case, optional space); no unit means milliseconds. Decimals
// ("1.5s") are allowed when the result is a whole number of milliseconds.
// InvalidArgument as for ParseSize.
absl::StatusOr<uint64_t> ParseDurationMs(std::string_view text);

// A fraction in [0, 1]: a decimal number ("0.9") or a percentage in [0, 100]
// ("90%", "12.5 %"). InvalidArgument for anything else.
absl::StatusOr<double> ParseFraction(std::string_view text);

}  // namespace cistern
