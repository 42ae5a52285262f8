#include "src/cli/proto_json.h"

#include <string>

namespace cistern::cli {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using Json = nlohmann::ordered_json;

// One value of `f`: element `i` of a repeated field, or the field (i < 0).
Json Value(const Message& m, const FieldDescriptor* f, int i) {
  const Reflection* r = m.GetReflection();
  const bool rep = i >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return rep ? r->GetRepeatedInt32(m, f, i) : r->GetInt32(m, f);
    case FieldDescriptor::CPPTYPE_INT64:
      return rep ? r->GetRepeatedInt64(m, f, i) : r->GetInt64(m, f);
    case FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r->GetRepeatedUInt32(m, f, i) : r->GetUInt32(m, f);
    case FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r->GetRepeatedUInt64(m, f, i) : r->GetUInt64(m, f);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r->GetRepeatedFloat(m, f, i) : r->GetFloat(m, f);
    case FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f);
    case FieldDescriptor::CPPTYPE_ENUM:
      return std::string((rep ? r->GetRepeatedEnum(m, f, i) : r->GetEnum(m, f))->name());
    case FieldDescriptor::CPPTYPE_STRING:
      return rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoToJson(rep ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f));
  }
  return nullptr;
}

}  // namespace

Json ProtoToJson(const Message& m) {
  const auto* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  Json out = Json::object();
  for (int k = 0; k < d->field_count(); ++k) {
    const FieldDescriptor* f = d->field(k);
    const std::string name(f->name());
    if (f->is_map()) {
      Json obj = Json::object();
      const FieldDescriptor* key = f->message_type()->map_key();
      const FieldDescriptor* value = f->message_type()->map_value();
      for (int i = 0; i < r->FieldSize(m, f); ++i) {
        const Message& entry = r->GetRepeatedMessage(m, f, i);
        Json k_json = Value(entry, key, -1);
        obj[k_json.is_string() ? k_json.get<std::string>() : k_json.dump()] =
            Value(entry, value, -1);
      }
      out[name] = std::move(obj);
    } else if (f->is_repeated()) {
      Json arr = Json::array();
      for (int i = 0; i < r->FieldSize(m, f); ++i) arr.push_back(Value(m, f, i));
      out[name] = std::move(arr);
    } else if (f->has_presence() && f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE &&
               !r->HasField(m, f)) {
      out[name] = nullptr;
    } else {
      out[name] = Value(m, f, -1);
    }
  }
  return out;
}

}  // namespace cistern::cli
