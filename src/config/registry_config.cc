#include "src/config/registry_config.h"

#include <unistd.h>

#include <cstdlib>

#include "fmt/format.h"
#include "src/common/fmt_absl.h"
#include "src/common/status_macros.h"
#include "src/common/units.h"
#include "src/common/utf8.h"
#include "src/config/config_checks.h"
#include "src/config/config_yaml.h"

namespace cistern::config {
namespace {}  // namespace

void ApplyRegistryDefaults(RegistryServerConfig* cfg) {
  if (cfg->listen_address().empty()) cfg->set_listen_address("127.0.0.1");
  if (!cfg->has_port()) cfg->set_port(7470);
  if (cfg->state_dir().empty()) {
    if (const char* h = std::getenv("CISTERN_HOME"); h && *h) {
      cfg->set_state_dir(std::string(h) + "/registry/state");
    } else {
      cfg->set_state_dir(fmt::format("/tmp/cistern-{}/registry", ::geteuid()));
    }
  }
  if (cfg->database().empty()) cfg->set_database(cfg->state_dir() + "/registry.db");
  if (cfg->metrics_address().empty()) cfg->set_metrics_address("127.0.0.1");
  if (!cfg->has_metrics_port()) cfg->set_metrics_port(9470);
  if (cfg->log_level() == LOG_LEVEL_UNSPECIFIED) cfg->set_log_level(LOG_LEVEL_INFO);
  if (cfg->log_max_bytes() == 0) cfg->set_log_max_bytes(64 * kMiB);
  if (cfg->log_max_files() == 0) cfg->set_log_max_files(5);
  if (cfg->heartbeat_interval_ms() == 0) cfg->set_heartbeat_interval_ms(1000);
  if (cfg->suspect_after_ms() == 0) cfg->set_suspect_after_ms(5000);
  if (cfg->dead_after_ms() == 0) cfg->set_dead_after_ms(15000);
  if (cfg->replica_grace_ms() == 0) cfg->set_replica_grace_ms(300'000);
  if (cfg->max_transfers_per_source() == 0) cfg->set_max_transfers_per_source(4);
  if (cfg->transfer_ttl_ms() == 0) cfg->set_transfer_ttl_ms(60'000);
  if (cfg->max_message_bytes() == 0) cfg->set_max_message_bytes(16 * kMiB);
  if (cfg->max_entries_per_request() == 0) cfg->set_max_entries_per_request(8192);
  if (cfg->max_group_commit() == 0) cfg->set_max_group_commit(4096);
}

absl::Status ValidateRegistryConfig(const RegistryServerConfig& cfg) {
  auto bad = [](std::string msg) { return absl::InvalidArgumentError(std::move(msg)); };
  if (cfg.cluster_id().empty()) return bad("cluster_id is required: the id of the cluster served");
  RETURN_IF_ERROR(CheckId("cluster_id", cfg.cluster_id()));
  if (cfg.token().empty()) {
    return bad("token is required: the cluster's shared secret, which every daemon sends");
  }
  if (!IsValidUtf8(cfg.token()) || cfg.token().size() > 4096 ||
      cfg.token().find_first_of("\r\n") != std::string::npos) {
    return bad("token must be UTF-8 text of at most 4096 bytes on one line");
  }
  RETURN_IF_ERROR(CheckNumericAddress("listen_address", cfg.listen_address()));
  if (cfg.port() > 65535) return bad(fmt::format("port {} exceeds 65535", cfg.port()));
  RETURN_IF_ERROR(CheckTlsPair("tls", cfg.tls().cert_file(), cfg.tls().key_file()));
  if (!cfg.tls().client_ca_file().empty() && cfg.tls().cert_file().empty()) {
    return bad(
        "tls.client_ca_file needs tls.cert_file and tls.key_file: client certificates "
        "are only checked over TLS");
  }
  for (const auto& [key, value] :
       {std::pair{"state_dir", cfg.state_dir()}, std::pair{"database", cfg.database()}}) {
    if (value.empty() || value[0] != '/') {
      return bad(fmt::format("{} '{}' must be absolute", key, value));
    }
  }
  RETURN_IF_ERROR(CheckNumericAddress("metrics_address", cfg.metrics_address()));
  if (cfg.metrics_port() > 65535) {
    return bad(fmt::format("metrics_port {} exceeds 65535", cfg.metrics_port()));
  }
  if (cfg.metrics_port() != 0 && cfg.metrics_port() == cfg.port() &&
      cfg.metrics_address() == cfg.listen_address()) {
    return bad(fmt::format("metrics_port {} is also the gRPC port", cfg.metrics_port()));
  }
  if (cfg.log_max_bytes() < 64 * 1024) {
    return bad(fmt::format("log_max_bytes {} is below the minimum of 64KiB", cfg.log_max_bytes()));
  }
  if (cfg.log_max_files() > 1000) {
    return bad(fmt::format("log_max_files {} exceeds 1000", cfg.log_max_files()));
  }
  if (cfg.heartbeat_interval_ms() < 10) {
    return bad(fmt::format("heartbeat_interval_ms {} is below 10", cfg.heartbeat_interval_ms()));
  }
  if (cfg.suspect_after_ms() < 2 * cfg.heartbeat_interval_ms()) {
    return bad(fmt::format(
        "suspect_after_ms {} must be at least twice heartbeat_interval_ms ({}), or one late "
        "heartbeat makes a host suspect",
        cfg.suspect_after_ms(), cfg.heartbeat_interval_ms()));
  }
  if (cfg.dead_after_ms() <= cfg.suspect_after_ms()) {
    return bad(fmt::format("dead_after_ms {} must be above suspect_after_ms {}",
                           cfg.dead_after_ms(), cfg.suspect_after_ms()));
  }
  if (cfg.max_transfers_per_source() > 4096) {
    return bad(
        fmt::format("max_transfers_per_source {} exceeds 4096", cfg.max_transfers_per_source()));
  }
  if (cfg.transfer_ttl_ms() < 100) {
    return bad(fmt::format("transfer_ttl_ms {} is below 100", cfg.transfer_ttl_ms()));
  }
  if (cfg.database_max_bytes() != 0 && cfg.database_max_bytes() < 64 * 1024) {
    return bad(fmt::format("database_max_bytes {} is below the minimum of 64KiB (0: no limit)",
                           cfg.database_max_bytes()));
  }
  if (cfg.max_message_bytes() < 64 * 1024 || cfg.max_message_bytes() > 1024 * kMiB) {
    return bad(fmt::format("max_message_bytes {} must be between 64KiB and 1GiB",
                           cfg.max_message_bytes()));
  }
  if (cfg.max_entries_per_request() > (1u << 20)) {
    return bad(fmt::format("max_entries_per_request {} exceeds {}", cfg.max_entries_per_request(),
                           1u << 20));
  }
  if (cfg.max_group_commit() > (1u << 20)) {
    return bad(fmt::format("max_group_commit {} exceeds {}", cfg.max_group_commit(), 1u << 20));
  }
  return CheckFieldRanges(cfg, "");
}

absl::StatusOr<RegistryServerConfig> LoadRegistryConfig(const std::string& path,
                                                        const std::vector<std::string>& overrides) {
  RegistryServerConfig cfg;
  if (!path.empty()) RETURN_IF_ERROR(LoadYamlFile(path, &cfg));
  for (const std::string& o : overrides) {
    absl::Status s = ApplyOverride(o, &cfg);
    if (!s.ok()) return absl::InvalidArgumentError(fmt::format("--set {}: {}", o, s.message()));
  }
  ApplyRegistryDefaults(&cfg);
  RETURN_IF_ERROR(ValidateRegistryConfig(cfg));
  return cfg;
}

}  // namespace cistern::config
