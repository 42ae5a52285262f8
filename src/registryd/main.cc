// cistern-registry: the cluster registry (docs/cluster.md). One per cluster;
// every cisternd with cluster.registry registers with it.
//
// Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when it could not
// start (database unreadable or locked, gRPC port in use, a database of
// another cluster), 2 for a usage or configuration error, an unreadable TLS
// file, or a metrics port that is taken (checked before the database is
// touched).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "spdlog/spdlog.h"
#include "src/common/fmt_absl.h"
#include "src/config/registry_config.h"
#include "src/registry/sqlite_backend.h"
#include "src/registryd/registry_metrics.h"
#include "src/registryd/registry_server.h"
#include "src/service/http_server.h"
#include "src/service/logging.h"
#include "src/service/stdio_rotation.h"

namespace {

using namespace cistern;

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return !out->empty();
}

int Serve(const config::RegistryServerConfig& cfg, const sigset_t& stop_signals) {
  registryd::RegistryMetrics metrics(CISTERN_VERSION);
  service::HttpServerOptions http_opts;
  http_opts.address = cfg.metrics_address();
  http_opts.port = static_cast<uint16_t>(cfg.metrics_port());
  service::HttpServer http(http_opts);
  http.Handle("/metrics", [&metrics] { return metrics.MetricsPage(); });
  http.Handle("/health", [&metrics] { return metrics.HealthPage(); });
  std::optional<service::StdioRotation> stdio;
  if (!cfg.log_file().empty()) {
    stdio = service::StdioRotation::ForDescriptors(
        {STDERR_FILENO, STDOUT_FILENO}, cfg.log_max_bytes(), static_cast<int>(cfg.log_max_files()));
  }
  if (absl::Status s = http.Start(); !s.ok()) {
    spdlog::error("cannot serve metrics: {} (set metrics_port; 0 picks a free one)", s.message());
    return 2;
  }
  spdlog::info("metrics on http://{}/metrics, health on http://{}/health", http.endpoint(),
               http.endpoint());

  registryd::RegistryServerOptions opts;
  opts.catalog.cluster_id = cfg.cluster_id();
  opts.catalog.heartbeat_interval = std::chrono::milliseconds(cfg.heartbeat_interval_ms());
  opts.catalog.suspect_after = std::chrono::milliseconds(cfg.suspect_after_ms());
  opts.catalog.dead_after = std::chrono::milliseconds(cfg.dead_after_ms());
  opts.catalog.replica_grace = std::chrono::milliseconds(cfg.replica_grace_ms());
  opts.catalog.max_transfers_per_source = cfg.max_transfers_per_source();
  opts.catalog.transfer_ttl = std::chrono::milliseconds(cfg.transfer_ttl_ms());
  opts.token = cfg.token();
  opts.listen_address = cfg.listen_address();
  opts.port = static_cast<uint16_t>(cfg.port());
  opts.max_message_bytes = static_cast<int>(cfg.max_message_bytes());
  opts.max_entries_per_request = cfg.max_entries_per_request();
  opts.max_group_commit = cfg.max_group_commit();
  opts.tick_interval =
      std::min<Clock::Duration>(std::chrono::milliseconds(200), opts.catalog.heartbeat_interval);
  for (const auto& [key, path, out] :
       {std::tuple{"tls.cert_file", cfg.tls().cert_file(), &opts.tls_cert_pem},
        std::tuple{"tls.key_file", cfg.tls().key_file(), &opts.tls_key_pem},
        std::tuple{"tls.client_ca_file", cfg.tls().client_ca_file(), &opts.tls_client_ca_pem}}) {
    if (!path.empty() && !ReadFile(path, out)) {
      spdlog::error("configuration error: {} '{}' cannot be read or is empty", key, path);
      return 2;
    }
  }

  std::error_code ec;
  std::filesystem::create_directories(cfg.state_dir(), ec);
  std::filesystem::create_directories(std::filesystem::path(cfg.database()).parent_path(), ec);
  registry::SqliteOptions sq;
  sq.path = cfg.database();
  sq.max_bytes = cfg.database_max_bytes();
  auto backend = registry::OpenSqliteBackend(sq);
  if (!backend.ok()) {
    spdlog::error("cannot open the registry database: {}", backend.status().message());
    return 1;
  }
  auto server = registryd::RegistryServer::Start(opts, std::move(*backend), &metrics);
  if (!server.ok()) {
    spdlog::error("cannot start: {}", server.status().message());
    return 1;
  }
  std::string endpoint = cfg.listen_address().find(':') != std::string::npos
                             ? fmt::format("[{}]:{}", cfg.listen_address(), (*server)->port())
                             : fmt::format("{}:{}", cfg.listen_address(), (*server)->port());
  {
    // Where the CLI and scripts find a registry started with port 0.
    std::ofstream(cfg.state_dir() + "/registry.endpoint") << endpoint << "\n";
  }
  metrics.set_ready(true);
  spdlog::info("cistern-registry {} ready on {} (cluster '{}', epoch {}, {}, pid {})",
               CISTERN_VERSION, endpoint, cfg.cluster_id(), (*server)->epoch(),
               cfg.tls().cert_file().empty()        ? "no TLS"
               : cfg.tls().client_ca_file().empty() ? "TLS"
                                                    : "mTLS",
               getpid());
  for (;;) {
    timespec one_second{1, 0};
    int sig = sigtimedwait(&stop_signals, nullptr, &one_second);
    if (sig == SIGTERM || sig == SIGINT) break;
    if (stdio && stdio->Check()) spdlog::info("rotated {}", stdio->path().string());
  }
  spdlog::info("stopping");
  metrics.set_ready(false);
  (*server)->Stop();
  http.Stop();
  spdlog::info("cistern-registry stopped cleanly");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cistern-registry: the Cistern cluster registry"};
  std::string config_path;
  std::vector<std::string> overrides;
  app.add_option("--config", config_path,
                 "YAML config file (see deploy/config/cistern-registry.yaml)");
  app.add_option("--set", overrides, "override a config key, e.g. --set port=7470")
      ->take_all()
      ->allow_extra_args(false);
  app.set_version_flag("--version", std::string(CISTERN_VERSION));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  // SIGTERM and SIGINT are taken by sigtimedwait in Serve; blocked here,
  // before any thread starts, so that every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGXFSZ, SIG_IGN);

  cistern::service::StartConsoleLog("cistern-registry");
  auto cfg = cistern::config::LoadRegistryConfig(config_path, overrides);
  if (!cfg.ok()) {
    std::fprintf(stderr, "cistern-registry: configuration error: %s\n",
                 std::string(cfg.status().message()).c_str());
    return 2;
  }
  if (absl::Status s =
          cistern::service::ConfigureLog("cistern-registry", cfg->log_file(), cfg->log_max_bytes(),
                                         cfg->log_max_files(), cfg->log_level());
      !s.ok()) {
    std::fprintf(stderr, "cistern-registry: configuration error: %s\n",
                 std::string(s.message()).c_str());
    return 2;
  }
  return Serve(*cfg, stop_signals);
}
