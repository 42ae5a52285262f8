// libFuzzer harness for the config loader (src/config/config_yaml.h) with the
// daemon's schema (config::DaemonConfig). The input is a YAML text; when it
// holds a line break, the part after the first one is also applied as a
// `--set` override. Checks: a failed load leaves the message unchanged; an
// accepted config renders (ToYaml) to YAML that loads back (into a fresh
// message) to an equal one. libFuzzer's -timeout and -rss_limit_mb catch loops and unbounded
// growth (yaml-cpp 0.7 loops forever on a flow ',' outside a collection).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cistern/config.pb.h"
#include "src/config/config_yaml.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  cistern::config::DaemonConfig cfg;
  cfg.set_token("before");
  cfg.add_allowed_uids(7);
  const std::string before = cfg.SerializeAsString();
  absl::Status s = cistern::LoadYamlString(text, &cfg);
  if (!s.ok()) {
    Check(s.code() == absl::StatusCode::kInvalidArgument);
    Check(cfg.SerializeAsString() == before);
  } else {
    std::string yaml = cistern::ToYaml(cfg);
    cistern::config::DaemonConfig back;  // ToYaml's contract: into a fresh message
    absl::Status again = cistern::LoadYamlString(yaml, &back);
    Check(again.ok());
    Check(back.SerializeAsString() == cfg.SerializeAsString());
  }

  if (size_t nl = text.find('\n'); nl != std::string_view::npos) {
    cistern::config::DaemonConfig o;
    o.add_allowed_uids(7);
    const std::string o_before = o.SerializeAsString();
    absl::Status os = cistern::ApplyOverride(text.substr(nl + 1), &o);
    if (!os.ok()) Check(o.SerializeAsString() == o_before);
  }
  return 0;
}
