#include "src/config/daemon_config.h"

#include <arpa/inet.h>
#include <sys/sysinfo.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <set>

#include "fmt/format.h"
#include "src/common/fmt_absl.h"
#include "src/common/paths.h"
#include "src/common/status_macros.h"
#include "src/common/units.h"
#include "src/common/utf8.h"
#include "src/config/config_checks.h"
#include "src/config/config_yaml.h"
#include "src/stream/rules.h"

namespace cistern::config {
namespace {

bool ValidTierName(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

}  // namespace

void ApplyDefaults(config::DaemonConfig* cfg) {
  std::string uid = std::to_string(geteuid());
  if (cfg->runtime_dir().empty()) cfg->set_runtime_dir(paths::DefaultRuntimeDir());
  if (cfg->socket_path().empty()) cfg->set_socket_path(cfg->runtime_dir() + "/cisternd.sock");
  if (cfg->tiers_size() == 0) {
    auto* t = cfg->add_tiers();
    t->set_name("mem");
    t->set_size(kGiB);
  }
  for (auto& t : *cfg->mutable_tiers()) {
    t.set_size(t.size() / 4096 * 4096);  // whole pages; "4GB" is not a page multiple
    if (t.path().empty()) {
      // One arena per user and CISTERN_HOME, stable across restarts.
      std::string home;
      if (const char* h = std::getenv("CISTERN_HOME"); h && *h) {
        uint32_t fnv = 2166136261u;  // FNV-1a: stable across builds and versions
        for (const char* p = h; *p; ++p) fnv = (fnv ^ static_cast<uint8_t>(*p)) * 16777619u;
        home = fmt::format("-{:08x}", fnv);
      }
      t.set_path("/dev/shm/cistern-" + uid + home + "-" + t.name() + ".arena");
    }
    if (!t.has_high_watermark()) t.set_high_watermark(0.95);
    if (!t.has_low_watermark()) t.set_low_watermark(std::min(0.85, t.high_watermark()));
    if (!t.has_prefault()) t.set_prefault(true);
  }
  if (cfg->allowed_uids_size() == 0) cfg->add_allowed_uids(geteuid());
  if (cfg->log_level() == config::LOG_LEVEL_UNSPECIFIED) cfg->set_log_level(config::LOG_LEVEL_INFO);
  if (cfg->max_frame_bytes() == 0) cfg->set_max_frame_bytes(16 * kMiB);
  if (cfg->hello_timeout_ms() == 0) cfg->set_hello_timeout_ms(5000);
  if (cfg->max_sessions() == 0) cfg->set_max_sessions(1024);
  if (cfg->max_pending_sessions() == 0) cfg->set_max_pending_sessions(64);
  if (!cfg->has_session_idle_timeout_ms()) cfg->set_session_idle_timeout_ms(600'000);
  if (cfg->max_unsent_reply_bytes() == 0) cfg->set_max_unsent_reply_bytes(8 * kMiB);
  if (cfg->max_read_ahead_bytes() == 0) cfg->set_max_read_ahead_bytes(kMiB);
  if (cfg->max_batch() == 0) cfg->set_max_batch(4096);
  if (cfg->max_leases() == 0) cfg->set_max_leases(1 << 20);
  if (cfg->lease_table_path().empty()) {
    std::string p = cfg->tiers(0).path();
    constexpr std::string_view kSuffix = ".arena";
    if (p.size() > kSuffix.size() && p.ends_with(kSuffix)) p.resize(p.size() - kSuffix.size());
    cfg->set_lease_table_path(p + ".leases");
  }
  if (!cfg->fast_path().has_enabled()) cfg->mutable_fast_path()->set_enabled(true);
  if (cfg->fast_path().index_slots() == 0) {
    // One slot per 16 KiB of arena, from 4096 to 4M slots (32 bytes each; the
    // file is sparse, so a store of few keys takes few pages).
    uint64_t total = 0;
    for (const auto& t : cfg->tiers()) total += t.size();
    uint64_t slots = std::bit_ceil(std::max<uint64_t>(total / (16 * kKiB), 1));
    cfg->mutable_fast_path()->set_index_slots(std::clamp<uint64_t>(slots, 4096, uint64_t{1} << 22));
  }
  if (!cfg->has_busy_poll_us()) cfg->set_busy_poll_us(0);
  if (cfg->metrics_address().empty()) cfg->set_metrics_address("127.0.0.1");
  if (!cfg->has_metrics_port()) cfg->set_metrics_port(9464);
  if (cfg->log_max_bytes() == 0) cfg->set_log_max_bytes(64 * kMiB);
  if (cfg->log_max_files() == 0) cfg->set_log_max_files(5);
  if (cfg->recovery().on_corrupt_object() == config::CORRUPT_OBJECT_POLICY_UNSPECIFIED) {
    cfg->mutable_recovery()->set_on_corrupt_object(config::CORRUPT_OBJECT_POLICY_QUARANTINE);
  }
  if (cfg->state_dir().empty()) cfg->set_state_dir(cfg->runtime_dir() + "/state");
  auto* reg = cfg->mutable_registry();
  if (reg->mode() == config::REGISTRY_MODE_UNSPECIFIED)
    reg->set_mode(config::REGISTRY_MODE_EMBEDDED);
  if (reg->path().empty()) reg->set_path(cfg->state_dir() + "/registry.db");
  auto* st = cfg->mutable_streams();
  if (st->lease_timeout_ms() == 0) st->set_lease_timeout_ms(60'000);
  if (!st->has_high_watermark_bytes()) st->set_high_watermark_bytes(cfg->tiers(0).size() / 2);
  if (!st->has_low_watermark_bytes())
    st->set_low_watermark_bytes(st->high_watermark_bytes() / 5 * 4);
  if (st->max_lease_refs() == 0) st->set_max_lease_refs(4096);
  if (cfg->host_id().empty()) {
    // hostname-<machine id start>; a hostname of up to 64 characters is cut
    // so that the id keeps its machine part and stays within 64.
    std::string id = paths::HostId();
    if (id.size() > 64) id = id.substr(0, 55) + id.substr(id.size() - 9);
    cfg->set_host_id(id);
  }
  auto* cl = cfg->mutable_cluster();
  if (!cl->has_publish_delay_ms()) cl->set_publish_delay_ms(2);
  if (cl->publish_batch() == 0) cl->set_publish_batch(1024);
  if (cl->rpc_timeout_ms() == 0) cl->set_rpc_timeout_ms(5000);
  if (cl->max_retry_backoff_ms() == 0) cl->set_max_retry_backoff_ms(5000);
  if (cl->pull_timeout_ms() == 0) cl->set_pull_timeout_ms(60000);
  if (cl->pull_threads() == 0) cl->set_pull_threads(4);
  if (cl->pull_stall_timeout_ms() == 0) cl->set_pull_stall_timeout_ms(10000);
  if (cl->transfer().empty()) cl->set_transfer("auto");
}

absl::Status ValidateClusterConfig(const config::DaemonConfig& cfg) {
  auto bad = [](std::string msg) { return absl::InvalidArgumentError(std::move(msg)); };
  RETURN_IF_ERROR(CheckId("host_id", cfg.host_id()));
  const auto& cl = cfg.cluster();
  if (cl.registry().empty()) {
    for (const auto& [key, value] :
         {std::pair{"cluster_id", cl.cluster_id()}, std::pair{"token", cl.token()},
          std::pair{"advertise", cl.advertise()}}) {
      if (!value.empty()) {
        return bad(
            fmt::format("cluster.{} is set but cluster.registry is empty; set the "
                        "registry's host:port to join a cluster",
                        key));
      }
    }
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(CheckHostPort("cluster.registry", cl.registry()));
  if (cl.cluster_id().empty()) return bad("cluster.cluster_id is required with cluster.registry");
  RETURN_IF_ERROR(CheckId("cluster.cluster_id", cl.cluster_id()));
  if (cl.token().empty()) return bad("cluster.token is required with cluster.registry");
  if (!IsValidUtf8(cl.token()) || cl.token().size() > 4096 ||
      cl.token().find_first_of("\r\n") != std::string::npos) {
    return bad("cluster.token must be UTF-8 text of at most 4096 bytes on one line");
  }
  if (cl.advertise().empty()) {
    return bad(
        "cluster.advertise is required with cluster.registry: the host:port peers reach "
        "this daemon at");
  }
  RETURN_IF_ERROR(CheckHostPort("cluster.advertise", cl.advertise()));
  RETURN_IF_ERROR(CheckTlsPair("cluster.tls", cl.tls().cert_file(), cl.tls().key_file()));
  if (!cl.tls().cert_file().empty() && cl.tls().ca_file().empty()) {
    return bad(
        "cluster.tls.cert_file needs cluster.tls.ca_file: a client certificate is only "
        "sent over TLS");
  }
  if (cl.publish_delay_ms() > 1000) {
    return bad(fmt::format("cluster.publish_delay_ms {} exceeds 1000", cl.publish_delay_ms()));
  }
  if (cl.publish_batch() > 65536) {
    return bad(fmt::format("cluster.publish_batch {} exceeds 65536", cl.publish_batch()));
  }
  if (cl.rpc_timeout_ms() < 10) {
    return bad(fmt::format("cluster.rpc_timeout_ms {} is below 10", cl.rpc_timeout_ms()));
  }
  if (cl.max_retry_backoff_ms() < 100) {
    return bad(
        fmt::format("cluster.max_retry_backoff_ms {} is below 100", cl.max_retry_backoff_ms()));
  }
  if (cl.pull_timeout_ms() > 3600000) {
    return bad(
        fmt::format("cluster.pull_timeout_ms {} exceeds 3600000 (1h)", cl.pull_timeout_ms()));
  }
  if (cl.pull_stall_timeout_ms() < 100 || cl.pull_stall_timeout_ms() > 3600000) {
    return bad(fmt::format("cluster.pull_stall_timeout_ms {} is outside 100..3600000 (100ms..1h)",
                           cl.pull_stall_timeout_ms()));
  }
  if (cl.transfer() != "auto" && cl.transfer() != "am" && cl.transfer() != "get") {
    return bad(fmt::format("cluster.transfer '{}' must be auto, am or get", cl.transfer()));
  }
  if (cl.transport_port() > 65535) {
    return bad(fmt::format("cluster.transport_port {} exceeds 65535", cl.transport_port()));
  }
  {
    const std::string& a = cl.advertise();
    if (cl.transport_port() != 0 &&
        a.substr(a.rfind(':') + 1) == std::to_string(cl.transport_port())) {
      return bad(fmt::format(
          "cluster.transport_port {} is cluster.advertise's port: the control channel listens "
          "there; pick another (or 0 for a free one)",
          cl.transport_port()));
    }
  }
  if (!cl.tls().peer_server_name().empty() && cl.tls().cert_file().empty()) {
    return bad(
        "cluster.tls.peer_server_name needs cluster.tls.cert_file and key_file: the daemons' "
        "control channel is TLS only with their certificates");
  }
  if (cl.pull_threads() > 64) {
    return bad(fmt::format("cluster.pull_threads {} exceeds 64", cl.pull_threads()));
  }
  {
    // Peers reach the daemon's control channel at advertise: it listens there.
    const std::string& a = cl.advertise();
    std::string host = a.substr(0, a.rfind(':'));
    in_addr ip{};
    if (::inet_pton(AF_INET, host.c_str(), &ip) != 1) {
      return bad(fmt::format(
          "cluster.advertise '{}' must be a numeric IPv4 address and port (the daemon's peer "
          "control channel and transport listen there)",
          a));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateDaemonConfig(const config::DaemonConfig& cfg) {
  auto bad = [](std::string msg) { return absl::InvalidArgumentError(std::move(msg)); };
  // The keys whose ranges the daemon depends on; the stream defaults get the
  // check every stream open runs on them.
  if (cfg.hello_timeout_ms() < 1 || cfg.hello_timeout_ms() > kMaxHelloTimeoutMs) {
    return bad(fmt::format("hello_timeout_ms {} must be 1..{} (1h)", cfg.hello_timeout_ms(),
                           kMaxHelloTimeoutMs));
  }
  {
    wire::StreamOptions o;
    o.set_lease_timeout_ms(cfg.streams().lease_timeout_ms());
    o.set_high_watermark_bytes(cfg.streams().high_watermark_bytes());
    o.set_low_watermark_bytes(cfg.streams().low_watermark_bytes());
    o.set_max_in_flight_per_producer(0);
    o.set_max_lease_refs(cfg.streams().max_lease_refs());
    if (absl::Status s = stream::ValidateOptions(o); !s.ok()) {
      return bad(fmt::format("streams.{}", s.message()));
    }
  }
  if (!IsValidUtf8(cfg.token())) return bad("token is not valid UTF-8");
  if (cfg.socket_path().size() >= sizeof(sockaddr_un::sun_path)) {
    return bad(fmt::format("socket_path '{}' is {} bytes; Unix sockets allow at most {}",
                           cfg.socket_path(), cfg.socket_path().size(),
                           sizeof(sockaddr_un::sun_path) - 1));
  }
  if (cfg.socket_path()[0] != '/') {
    return bad(fmt::format("socket_path '{}' must be absolute", cfg.socket_path()));
  }
  struct sysinfo si {};
  uint64_t physical = sysinfo(&si) == 0 ? uint64_t{si.totalram} * si.mem_unit : UINT64_MAX;
  std::set<std::string> names, paths;
  uint64_t total = 0;
  for (int i = 0; i < cfg.tiers_size(); ++i) {
    const auto& t = cfg.tiers(i);
    std::string at = fmt::format("tiers[{}]", i);
    if (!ValidTierName(t.name())) {
      return bad(fmt::format("{}.name '{}' must be 1-32 characters of [a-z0-9_-]", at, t.name()));
    }
    if (!names.insert(t.name()).second) {
      return bad(fmt::format("{}.name '{}' is used by another tier", at, t.name()));
    }
    if (!paths.insert(t.path()).second) {
      return bad(fmt::format("{}.path '{}' is used by another tier", at, t.path()));
    }
    if (t.size() < kMiB) {
      return bad(fmt::format("{}.size {} is below the minimum of 1MiB", at, t.size()));
    }
    if (t.size() > physical) {
      return bad(fmt::format("{}.size {} bytes exceeds this host's physical memory ({} bytes)", at,
                             t.size(), physical));
    }
    total += t.size();
    if (t.high_watermark() <= 0 || t.high_watermark() > 1) {
      return bad(fmt::format("{}.high_watermark {} must be in (0, 1]", at, t.high_watermark()));
    }
    if (t.low_watermark() < 0 || t.low_watermark() > t.high_watermark()) {
      return bad(fmt::format("{}.low_watermark {} must be in [0, high_watermark {}]", at,
                             t.low_watermark(), t.high_watermark()));
    }
  }
  if (total > physical) {
    return bad(fmt::format("tiers total {} bytes, more than this host's physical memory ({})",
                           total, physical));
  }
  if (cfg.max_frame_bytes() < 4096 || cfg.max_frame_bytes() > kGiB) {
    return bad(
        fmt::format("max_frame_bytes {} must be between 4KiB and 1GiB", cfg.max_frame_bytes()));
  }
  if (cfg.max_sessions() > (1u << 20)) {
    return bad(fmt::format("max_sessions {} exceeds {}", cfg.max_sessions(), 1u << 20));
  }
  if (cfg.max_pending_sessions() > 65536) {
    return bad(fmt::format("max_pending_sessions {} exceeds 65536", cfg.max_pending_sessions()));
  }
  if (cfg.max_unsent_reply_bytes() < 64 * 1024 || cfg.max_unsent_reply_bytes() > kGiB) {
    return bad(fmt::format("max_unsent_reply_bytes {} must be between 64KiB and 1GiB",
                           cfg.max_unsent_reply_bytes()));
  }
  if (cfg.max_read_ahead_bytes() < 64 * 1024 || cfg.max_read_ahead_bytes() > kGiB) {
    return bad(fmt::format("max_read_ahead_bytes {} must be between 64KiB and 1GiB",
                           cfg.max_read_ahead_bytes()));
  }
  if (cfg.busy_poll_us() > 10000) {
    return bad(fmt::format("busy_poll_us {} exceeds 10000", cfg.busy_poll_us()));
  }
  if (uint64_t n = cfg.fast_path().index_slots();
      n < 1024 || n > (uint64_t{1} << 30) || (n & (n - 1)) != 0) {
    return bad(fmt::format("fast_path.index_slots {} must be a power of two from 1024 to {}", n,
                           uint64_t{1} << 30));
  }
  if (cfg.max_batch() > 65536) {
    return bad(fmt::format("max_batch {} exceeds 65536", cfg.max_batch()));
  }
  if (cfg.max_leases() < cfg.max_batch() || cfg.max_leases() > (uint64_t{1} << 30)) {
    return bad(fmt::format("max_leases {} must be between max_batch ({}) and {}", cfg.max_leases(),
                           cfg.max_batch(), uint64_t{1} << 30));
  }
  for (const auto& t : cfg.tiers()) {
    if (cfg.lease_table_path() == t.path()) {
      return bad(fmt::format("lease_table_path '{}' is tier '{}''s arena", t.path(), t.name()));
    }
  }
  RETURN_IF_ERROR(CheckNumericAddress("metrics_address", cfg.metrics_address()));
  if (cfg.metrics_port() > 65535) {
    return bad(fmt::format("metrics_port {} exceeds 65535", cfg.metrics_port()));
  }
  if (cfg.log_max_bytes() < 64 * 1024) {
    return bad(fmt::format("log_max_bytes {} is below the minimum of 64KiB", cfg.log_max_bytes()));
  }
  if (cfg.state_dir().empty() || cfg.state_dir()[0] != '/') {
    return bad(fmt::format("state_dir '{}' must be absolute", cfg.state_dir()));
  }
  if (cfg.registry().path().empty() || cfg.registry().path()[0] != '/') {
    return bad(fmt::format("registry.path '{}' must be absolute", cfg.registry().path()));
  }
  const auto& st = cfg.streams();
  if (st.high_watermark_bytes() > 0 && st.low_watermark_bytes() > st.high_watermark_bytes()) {
    return bad(
        fmt::format("streams.low_watermark_bytes {} is above streams.high_watermark_bytes {}",
                    st.low_watermark_bytes(), st.high_watermark_bytes()));
  }
  if (st.max_lease_refs() > (1u << 20)) {
    return bad(fmt::format("streams.max_lease_refs {} exceeds {}", st.max_lease_refs(), 1u << 20));
  }
  if (cfg.log_max_files() > 1000) {
    return bad(fmt::format("log_max_files {} exceeds 1000", cfg.log_max_files()));
  }
  RETURN_IF_ERROR(ValidateClusterConfig(cfg));
  // Last, so that a key's own range is the one its error names.
  RETURN_IF_ERROR(CheckFieldRanges(cfg, ""));
  return absl::OkStatus();
}

absl::StatusOr<config::DaemonConfig> LoadDaemonConfig(const std::string& path,
                                                      const std::vector<std::string>& overrides) {
  config::DaemonConfig cfg;
  if (!path.empty()) RETURN_IF_ERROR(LoadYamlFile(path, &cfg));
  for (const std::string& o : overrides) {
    absl::Status s = ApplyOverride(o, &cfg);
    if (!s.ok()) return absl::InvalidArgumentError(fmt::format("--set {}: {}", o, s.message()));
  }
  ApplyDefaults(&cfg);
  RETURN_IF_ERROR(ValidateDaemonConfig(cfg));
  return cfg;
}

}  // namespace cistern::config
