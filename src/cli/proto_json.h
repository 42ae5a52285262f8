// A wire message as JSON, field for field: the one way the CLI turns what the
// daemon reports into --json output, so a field added to a proto appears there
// with no code.
//
// Names are the proto field names, in declaration order. Integers and doubles
// are JSON numbers (64-bit values too: unlike protobuf's own JSON mapping,
// which writes them as strings), bools are bools, string and bytes fields are
// strings (bytes that are not UTF-8 are replaced when printed), enums are
// their value names. A field with presence (proto3 `optional`) that is unset
// is null; an unset message field is its defaults. Repeated fields are
// arrays, maps are objects.
#pragma once

#include <google/protobuf/message.h>

#include <nlohmann/json.hpp>

namespace cistern::cli {

nlohmann::ordered_json ProtoToJson(const google::protobuf::Message& m);

}  // namespace cistern::cli
