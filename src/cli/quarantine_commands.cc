#include "src/cli/quarantine_commands.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "fmt/format.h"
#include "include/cistern/client.h"
#include "src/cli/proto_json.h"
#include "src/common/quote.h"

namespace cistern::cli {
namespace {

using Json = nlohmann::ordered_json;

std::string Id(const QuarantinedObjectInfo& q) {
  return fmt::format("{}:{}", q.tier(), q.block_offset());
}

struct QuarantineId {
  std::string tier;
  uint64_t offset = 0;
};

// "mem:4096" -> (mem, 4096); nullopt if it does not parse.
std::optional<QuarantineId> ParseId(const std::string& id) {
  auto colon = id.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  QuarantineId t{id.substr(0, colon), 0};
  if (!absl::SimpleAtoi(id.substr(colon + 1), &t.offset)) return std::nullopt;
  return t;
}

}  // namespace

int QuarantineList(const Target& t, bool json) {
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  auto all = (*c)->Quarantined();
  if (!all.ok()) return Fail(all.status());
  if (json) {
    Json arr = Json::array();
    for (const auto& q : *all) {
      Json j{{"id", Id(q)}};
      j.update(ProtoToJson(q));
      arr.push_back(std::move(j));
    }
    PrintJson(arr);
    return 0;
  }
  if (all->empty()) {
    std::printf("nothing is quarantined\n");
    return 0;
  }
  std::printf("%-20s %12s  %-32s %s\n", "id", "bytes", "key", "reason");
  for (const auto& q : *all) {
    std::printf("%-20s %12s  %-32s %s\n", Id(q).c_str(), HumanBytes(q.block_bytes()).c_str(),
                q.key().empty() ? "(unreadable)" : QuoteKey(q.key()).c_str(), q.reason().c_str());
  }
  return 0;
}

int QuarantineRemove(const Target& t, const std::vector<std::string>& ids, bool all, bool json) {
  if (all == !ids.empty()) {
    std::fprintf(stderr,
                 "cistern: quarantine rm takes ids (TIER:OFFSET, as `quarantine ls` "
                 "prints them) or --all, not both\n");
    return 2;
  }
  std::vector<QuarantineId> targets;
  for (const std::string& id : ids) {
    auto parsed = ParseId(id);
    if (!parsed) {
      std::fprintf(stderr, "cistern: '%s' is not a quarantined object's id (TIER:OFFSET)\n",
                   id.c_str());
      return 2;
    }
    targets.push_back(*parsed);
  }
  auto c = ConnectTo(t);
  if (!c.ok()) return Fail(c.status());
  if (all) {
    auto listed = (*c)->Quarantined();
    if (!listed.ok()) return Fail(listed.status());
    for (const auto& q : *listed) targets.push_back({q.tier(), q.block_offset()});
  }
  Json removed = Json::array();
  for (const QuarantineId& target : targets) {
    if (absl::Status s = (*c)->RemoveQuarantined(target.tier, target.offset); !s.ok()) {
      return Fail(s);
    }
    std::string id = fmt::format("{}:{}", target.tier, target.offset);
    if (json) {
      removed.push_back(id);
    } else {
      std::printf("removed %s\n", id.c_str());
    }
  }
  if (json) PrintJson(Json{{"removed", removed}});
  return 0;
}

void RegisterQuarantineCommands(CLI::App* app, Target* target, const bool* json, int* rc) {
  auto* q = app->add_subcommand(
      "quarantine", "corrupt objects set aside at the daemon's last start (not served)");
  q->require_subcommand(1);
  auto* ls = q->add_subcommand("ls", "list quarantined objects: id, size, key, reason");
  ls->callback([=] { *rc = QuarantineList(*target, *json); });
  static std::vector<std::string> ids;
  static bool all = false;
  auto* rm = q->add_subcommand("rm", "free quarantined objects (their bytes are gone)");
  rm->add_option("ID", ids, "TIER:OFFSET as `quarantine ls` prints it");
  rm->add_flag("--all", all, "every quarantined object");
  rm->callback([=] { *rc = QuarantineRemove(*target, ids, all, *json); });
}

}  // namespace cistern::cli
