#include "src/cli/system_commands.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "fmt/format.h"
#include "src/cli/proto_json.h"
#include "src/common/clock.h"
#include "src/common/quote.h"

namespace cistern::cli {
namespace {

namespace v1 = cluster::v1;
using Json = nlohmann::ordered_json;

// Prints "cistern: <message>" on stderr, with where the address came from when
// the registry could not be reached, and returns exit code 1.
int RegistryFail(const absl::Status& s, const FoundRegistry& found) {
  std::string msg(s.message());
  if (s.code() == absl::StatusCode::kUnavailable &&
      absl::AsciiStrToLower(msg).find("handshake") != std::string::npos) {
    msg += fmt::format(
        " (TLS: check --ca-file, --cert-file, --key-file and --server-name; the address is "
        "from {})",
        found.source);
  } else if (s.code() == absl::StatusCode::kUnavailable ||
             s.code() == absl::StatusCode::kDeadlineExceeded) {
    msg += fmt::format(" (is cistern-registry running? the address is from {})", found.source);
  }
  std::fprintf(stderr, "cistern: %s\n", msg.c_str());
  return 1;
}

// The client of the registry `t` leads to, or the exit code: 2 for a usage
// error or a TLS file that cannot be read, 1 when no registry is found.
int Connect(const RegistryTarget& t, FoundRegistry* found,
            std::unique_ptr<cluster::RegistryClient>* client) {
  absl::StatusOr<FoundRegistry> f = FindRegistry(t);
  if (!f.ok()) {
    std::fprintf(stderr, "cistern: %s\n", std::string(f.status().message()).c_str());
    return f.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  *found = std::move(*f);
  auto c = cluster::RegistryClient::Create(found->options);
  if (!c.ok()) {
    std::fprintf(stderr, "cistern: %s\n", std::string(c.status().message()).c_str());
    return 2;
  }
  *client = std::move(*c);
  return 0;
}

// How long ago `unix_ms` was: "1.2s ago", "3m04s ago", "2h05m ago",
// "3d04h ago"; "never" for 0.
std::string Age(uint64_t unix_ms, uint64_t now_ms) {
  if (unix_ms == 0) return "never";
  const uint64_t ms = now_ms > unix_ms ? now_ms - unix_ms : 0;
  const uint64_t s = ms / 1000;
  if (s < 60) return fmt::format("{:.1f}s ago", ms / 1000.0);
  if (s < 3600) return fmt::format("{}m{:02}s ago", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m ago", s / 3600, s % 3600 / 60);
  return fmt::format("{}d{:02}h ago", s / 86400, s % 86400 / 3600);
}

// Prints `rows` (the first one the header) as columns two spaces apart; the
// columns flagged in `right` are right-aligned.
void PrintTable(const std::vector<std::vector<std::string>>& rows, const std::vector<bool>& right) {
  std::vector<size_t> width(right.size(), 0);
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      if (i > 0) line += "  ";
      const bool last = i + 1 == r.size();
      if (right[i]) {
        line += fmt::format("{:>{}}", r[i], width[i]);
      } else {
        line += last ? r[i] : fmt::format("{:<{}}", r[i], width[i]);
      }
    }
    std::printf("%s\n", line.c_str());
  }
}

}  // namespace

int SystemQuery(const RegistryTarget& t, bool json) {
  FoundRegistry found;
  std::unique_ptr<cluster::RegistryClient> client;
  if (int code = Connect(t, &found, &client); code != 0) return code;
  absl::StatusOr<v1::QuerySystemReply> q = client->QuerySystem();
  if (!q.ok()) return RegistryFail(q.status(), found);
  const uint64_t now = UnixMs();
  if (json) {
    Json j = ProtoToJson(*q);
    for (int i = 0; i < q->hosts_size(); ++i) {
      const uint64_t last = q->hosts(i).last_heartbeat_unix_ms();
      j["hosts"][i]["heartbeat_age_ms"] = last == 0 ? Json() : Json(now > last ? now - last : 0);
    }
    PrintJson(j);
    return 0;
  }
  std::printf(
      "cluster '%s', epoch %llu: %d host%s, %llu keys, %llu replicas, %llu transfers in "
      "flight, generation floor %llu\n",
      q->cluster_id().c_str(), static_cast<unsigned long long>(q->registry_epoch()),
      q->hosts_size(), q->hosts_size() == 1 ? "" : "s", static_cast<unsigned long long>(q->keys()),
      static_cast<unsigned long long>(q->replicas()),
      static_cast<unsigned long long>(q->transfers_in_flight()),
      static_cast<unsigned long long>(q->generation_floor()));
  if (q->hosts_size() == 0) {
    std::printf("no host has registered\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"host", "state", "address",
                                                 "tiers (used/capacity)", "replicas", "bytes",
                                                 "heartbeat", "incarnation"}};
  for (const v1::HostInfo& h : q->hosts()) {
    std::vector<std::string> tiers;
    for (const v1::TierUsage& u : h.tiers()) {
      tiers.push_back(fmt::format("{} {}/{}", u.name(), HumanBytes(u.used_bytes()),
                                  HumanBytes(u.capacity_bytes())));
    }
    rows.push_back({h.host_id(), HostStateName(h.state()), h.advertise(),
                    tiers.empty() ? "-" : absl::StrJoin(tiers, ", "), std::to_string(h.replicas()),
                    HumanBytes(h.replica_bytes()), Age(h.last_heartbeat_unix_ms(), now),
                    std::to_string(h.incarnation())});
  }
  PrintTable(rows, {false, false, false, false, true, true, true, true});
  return 0;
}

int Locate(const RegistryTarget& t, const std::string& key, uint64_t generation, bool json) {
  FoundRegistry found;
  std::unique_ptr<cluster::RegistryClient> client;
  if (int code = Connect(t, &found, &client); code != 0) return code;
  v1::LocateRequest req;
  req.set_key(key);
  req.set_generation(generation);
  absl::StatusOr<v1::LocateReply> r = client->Locate(req);
  if (!r.ok()) return RegistryFail(r.status(), found);
  auto hex = [](const v1::Location& l) {
    return l.has_checksum() ? fmt::format("{:016x}", l.checksum()) : std::string();
  };
  if (json) {
    Json j = ProtoToJson(*r);
    for (int i = 0; i < r->locations_size(); ++i) {
      Json& l = j["locations"][i];
      l.erase("has_checksum");
      l["checksum"] = r->locations(i).has_checksum() ? Json(hex(r->locations(i))) : Json();
    }
    PrintJson(j);
    return 0;
  }
  std::printf("%s generation %llu: %d location%s, best first\n", QuoteKey(r->key()).c_str(),
              static_cast<unsigned long long>(r->generation()), r->locations_size(),
              r->locations_size() == 1 ? "" : "s");
  std::vector<std::vector<std::string>> rows = {
      {"#", "host", "state", "address", "tier", "size", "checksum"}};
  int rank = 0;
  for (const v1::Location& l : r->locations()) {
    std::string sum = hex(l);
    rows.push_back({std::to_string(++rank), l.host_id(), HostStateName(l.host_state()),
                    l.advertise(), l.tier(), HumanBytes(l.size()), sum.empty() ? "-" : sum});
  }
  PrintTable(rows, {true, false, false, false, false, true, false});
  return 0;
}

int Replicate(const Target& target, const std::string& key, const ReplicateOptions& o, bool json) {
  auto c = ConnectTo(target);
  if (!c.ok()) return Fail(c.status());
  auto r = (*c)->Replicate(key, o);
  if (!r.ok()) return Fail(r.status());
  absl::Status overall = r->status();
  if (json) {
    Json j;
    j["key"] = r->key;
    j["generation"] = r->generation;
    j["ok"] = overall.ok();
    Json targets = Json::array();
    for (const auto& t : r->targets) {
      Json sources = Json::object();
      for (const auto& [host, bytes] : t.sources) sources[host] = bytes;
      targets.push_back({{"host_id", t.host_id},
                         {"ok", t.status.ok()},
                         {"code", absl::StatusCodeToString(t.status.code())},
                         {"message", std::string(t.status.message())},
                         {"already_held", t.already_held},
                         {"upstream", t.upstream},
                         {"received", sources}});
    }
    j["targets"] = targets;
    Json sent = Json::object();
    for (const auto& [host, bytes] : r->bytes_sent) sent[host] = bytes;
    j["bytes_sent"] = sent;
    PrintJson(j);
    return overall.ok() ? 0 : 1;
  }
  std::printf("%s generation %llu\n", QuoteKey(r->key).c_str(),
              static_cast<unsigned long long>(r->generation));
  std::vector<std::vector<std::string>> rows = {{"HOST", "RESULT", "FROM", "RECEIVED"}};
  for (const auto& t : r->targets) {
    uint64_t received = 0;
    std::vector<std::string> from;
    for (const auto& [host, bytes] : t.sources) {
      received += bytes;
      from.push_back(host);
    }
    std::string result = t.already_held  ? "already held"
                         : t.status.ok() ? "copied"
                                         : absl::StatusCodeToString(t.status.code());
    rows.push_back(
        {t.host_id, result,
         from.empty() ? (t.upstream.empty() ? "-" : t.upstream) : absl::StrJoin(from, ","),
         HumanBytes(received)});
  }
  PrintTable(rows, {false, false, false, true});
  std::vector<std::vector<std::string>> sent = {{"HOST", "SENT"}};
  for (const auto& [host, bytes] : r->bytes_sent) sent.push_back({host, HumanBytes(bytes)});
  if (sent.size() > 1) {
    std::printf("bytes sent:\n");
    PrintTable(sent, {false, true});
  }
  for (const auto& t : r->targets) {
    if (!t.status.ok()) {
      std::fprintf(stderr, "cistern: host '%s': %s\n", t.host_id.c_str(),
                   std::string(t.status.message()).c_str());
    }
  }
  return overall.ok() ? 0 : 1;
}

void RegisterSystemCommands(CLI::App* app, Target* target, const bool* json, int* rc) {
  static RegistryTarget where;
  auto* system = app->add_subcommand("system", "ask the cluster registry about the cluster");
  system->require_subcommand(1);
  auto* query = system->add_subcommand(
      "query", "every host: state, address, tiers, replicas, last heartbeat, incarnation");
  AddRegistryTargetOptions(query, &where);
  query->callback([=] {
    RegistryTarget t = where;
    t.token = target->token;
    *rc = SystemQuery(t, *json);
  });

  static std::string key;
  static uint64_t generation = 0;
  auto* locate = app->add_subcommand("locate", "where the cluster holds KEY, best replica first");
  locate->add_option("KEY", key)->required();
  locate->add_option("--generation", generation,
                     "the generation to locate (default: the newest any live host holds)");
  AddRegistryTargetOptions(locate, &where);
  locate->callback([=] {
    RegistryTarget t = where;
    t.token = target->token;
    *rc = Locate(t, key, generation, *json);
  });

  static ReplicateOptions ro;
  static double timeout_s = 0;
  auto* replicate = app->add_subcommand(
      "replicate", "copy KEY to other hosts of the cluster; the origin sends each byte about once");
  replicate->add_option("KEY", key)->required();
  auto* to = replicate->add_option("--to", ro.to, "target host ids (one or more)");
  auto* all = replicate->add_flag("--all", ro.all, "every live host that lacks KEY");
  to->excludes(all);
  replicate->add_option("--generation", ro.generation,
                        "the generation to copy (default: the newest any live host holds)");
  replicate
      ->add_option("--fanout", ro.fanout, "children per host in the copy tree (default 1: a chain)")
      ->check(CLI::Range(1, 64));
  replicate
      ->add_option("--timeout", timeout_s,
                   "seconds the whole copy may take (default: cluster.pull_timeout_ms)")
      ->check(CLI::Range(0.0, 3600.0));
  replicate->callback([=] {
    if (ro.to.empty() && !ro.all) {
      *rc = UsageError(absl::InvalidArgumentError("replicate: name hosts with --to, or use --all"));
      return;
    }
    ReplicateOptions o = ro;
    o.deadline = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    *rc = Replicate(*target, key, o, *json);
  });
}

}  // namespace cistern::cli
