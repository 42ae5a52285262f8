// Registry sessions, as daemon sessions (daemon_commands.cc). Each
// `cistern registry start` creates
//   $CISTERN_HOME/registry/sessions/<session_id>/
//       config.yaml   the effective config cistern-registry runs with (--config);
//                     it holds the token, so it is readable by its owner only
//       meta.json     session_id, pid, version, start time, config, state_dir
//                     (written right after fork), endpoint and metrics (added
//                     once the registry is ready)
//       logs/stdout.log   the registry's log (its log_file unless the config
//                         names another), rotated at log_max_bytes into
//                         stdout.1.log ... stdout.<log_max_files>.log
//       logs/stderr.log   its stdout and stderr: what it prints before its log
//                         is set up (config errors) and crash reports; the
//                         registry rotates it alike
// and points $CISTERN_HOME/registry/current_session at it. Unless the config
// says otherwise, every session uses $CISTERN_HOME/registry/state/ as
// state_dir (registry.db, registry.endpoint), so the catalog outlives sessions
// (stop, restart, stale-session replacement). One registry runs per
// CISTERN_HOME: a start while the current session's process is alive fails; a
// session whose process is gone (kill -9, reboot) is stale and is replaced. A
// start that succeeds keeps the newest kSessionsKept session directories and
// removes older ones whose registry is gone.
//
// Readiness. cistern-registry writes <state_dir>/registry.endpoint
// ("host:port\n", the bound port) once its gRPC port serves; `start` removes a
// stale one before it forks and waits for that file, then, without TLS, for a
// QuerySystem call (with the config's cluster_id and token) to succeed; with
// TLS (the CLI may not trust its certificate) for GET /health on the metrics
// port to answer 200.
#include "src/cli/registry_commands.h"

#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "fmt/format.h"
#include "grpc/grpc.h"
#include "grpc/support/log.h"
#include "spdlog/spdlog.h"
#include "src/cli/proto_json.h"
#include "src/cli/sessions.h"
#include "src/common/clock.h"
#include "src/common/paths.h"
#include "src/config/config_yaml.h"
#include "src/config/registry_config.h"

namespace cistern::cli {
namespace fs = std::filesystem;
namespace v1 = cluster::v1;
namespace {

using SteadyClock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

constexpr const char* kBinary = "cistern-registry";

using Meta = SessionMeta;

fs::path RegistryDir() { return fs::path(paths::HomeDir()) / "registry"; }

const SessionStore& Sessions() {
  static const SessionStore store("registry", kBinary, RegistryDir());
  return store;
}

bool Alive(int pid) { return Sessions().Alive(pid); }
std::optional<Meta> FindSession(const std::string& id) { return Sessions().Find(id); }

// The config file when --config is absent: $CISTERN_REGISTRY_CONFIG, else none
// (defaults and --set only; cluster_id and token have no default). Unlike the
// daemon's, the shipped example is not a fallback: its token is a placeholder.
std::string ResolveConfig(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* e = std::getenv("CISTERN_REGISTRY_CONFIG"); e && *e) return e;
  return "";
}

// $CISTERN_REGISTRY_BIN, else cistern-registry beside this binary (installed)
// or in the build tree (build/<x>/src/registryd/), else from PATH.
std::string RegistryBinary() {
  if (const char* e = std::getenv("CISTERN_REGISTRY_BIN"); e && *e) return e;
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& p : {self / kBinary, self / "../registryd" / kBinary}) {
    if (fs::exists(p, ec)) return fs::weakly_canonical(p, ec).string();
  }
  return kBinary;
}

// The session's effective config (config.yaml); nullopt when it cannot be read.
std::optional<config::RegistryServerConfig> SessionConfig(const Meta& m) {
  config::RegistryServerConfig cfg;
  if (!LoadYamlFile((m.dir / "config.yaml").string(), &cfg).ok()) return std::nullopt;
  return cfg;
}

// "host:port", with an IPv6 address in brackets (as cistern-registry writes
// its endpoint).
std::string JoinHostPort(const std::string& host, uint32_t port) {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

// The contents of an endpoint file without its newline; nullopt until the
// whole line is there (the registry writes it in place, not atomically).
std::optional<std::string> ReadEndpointFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() < 2 || s.back() != '\n') return std::nullopt;
  s.pop_back();
  return s;
}

fs::path EndpointFile(const std::string& state_dir) {
  return fs::path(state_dir) / "registry.endpoint";
}

// Where the registry of session `m` (with config `cfg`) serves gRPC: what it
// reported at start, else its endpoint file (a --blocking session); "" if
// neither is known.
std::string SessionEndpoint(const Meta& m, const config::RegistryServerConfig& cfg) {
  if (!m.endpoint.empty()) return m.endpoint;
  return ReadEndpointFile(EndpointFile(cfg.state_dir())).value_or("");
}

// Where the registry serves /metrics and /health: metrics_address:metrics_port,
// or for metrics_port 0 the port its log line "metrics on http://HOST:PORT/
// metrics" names (the last such line of `log`); "" when that is not known (a
// log_level above info hides the line).
std::string MetricsEndpoint(const config::RegistryServerConfig& cfg, const fs::path& log) {
  if (cfg.metrics_port() != 0) return JoinHostPort(cfg.metrics_address(), cfg.metrics_port());
  std::ifstream in(log, std::ios::binary);
  if (!in) return "";
  constexpr std::streamoff kTail = 1 << 20;
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - kTail));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  constexpr std::string_view kMark = "metrics on http://";
  size_t at = text.rfind(kMark);
  if (at == std::string::npos) return "";
  at += kMark.size();
  size_t end = text.find("/metrics", at);
  if (end == std::string::npos || text.find('\n', at) < end) return "";
  return text.substr(at, end - at);
}

// "127.0.0.1:80" -> ("127.0.0.1", "80"); "[::1]:80" -> ("::1", "80").
std::pair<std::string, std::string> SplitHostPort(const std::string& endpoint) {
  if (!endpoint.empty() && endpoint[0] == '[') {
    size_t close = endpoint.find("]:");
    if (close != std::string::npos) {
      return {endpoint.substr(1, close - 1), endpoint.substr(close + 2)};
    }
  }
  size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos) return {endpoint, ""};
  return {endpoint.substr(0, colon), endpoint.substr(colon + 1)};
}

// The status code of GET http://<endpoint><path> (numeric host), or 0 when
// nothing answers within two seconds.
int HttpStatus(const std::string& endpoint, const std::string& path) {
  auto [host, port] = SplitHostPort(endpoint);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) return 0;
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(res);
    return 0;
  }
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int connected = ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  std::string reply;
  if (connected == 0) {
    std::string req = fmt::format("GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", path, endpoint);
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[1024];
      for (ssize_t n; reply.find("\r\n") == std::string::npos && reply.size() < 4096 &&
                      (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
        reply.append(buf, n);
      }
    }
  }
  ::close(fd);
  // "HTTP/1.1 200 OK"
  if (reply.rfind("HTTP/1.", 0) != 0 || reply.size() < 12) return 0;
  return std::atoi(reply.c_str() + 9);
}

void LogGrpcMessage(gpr_log_func_args* args) {
  spdlog::debug("grpc: {} ({}:{})", args->message, args->file, args->line);
}

std::atomic<bool> g_grpc_started{false};

}  // namespace

void StartGrpc() {
  static std::once_flag once;
  std::call_once(once, [] {
    gpr_set_log_function(&LogGrpcMessage);
    grpc_init();
    g_grpc_started = true;
  });
}

void StopGrpc() {
  if (g_grpc_started.exchange(false)) grpc_shutdown_blocking();
}

namespace {

// The client options for the registry of a session: `endpoint`, the config's
// cluster_id and token, TLS when the config has it (trusting `flags.ca_file`,
// else the registry's own certificate); each flag set in `flags` wins.
cluster::RegistryClientOptions SessionClientOptions(const config::RegistryServerConfig& cfg,
                                                    const std::string& endpoint,
                                                    const RegistryTarget& flags) {
  cluster::RegistryClientOptions o;
  o.address = endpoint;
  o.cluster_id = flags.cluster_id.empty() ? cfg.cluster_id() : flags.cluster_id;
  o.token = flags.token.empty() ? cfg.token() : flags.token;
  o.ca_file = !flags.ca_file.empty() ? flags.ca_file : cfg.tls().cert_file();
  o.cert_file = flags.cert_file;
  o.key_file = flags.key_file;
  o.server_name = flags.server_name;
  return o;
}

absl::StatusOr<v1::QuerySystemReply> QuerySystem(const cluster::RegistryClientOptions& o) {
  StartGrpc();
  auto client = cluster::RegistryClient::Create(o);
  if (!client.ok()) return client.status();
  return (*client)->QuerySystem();
}

struct StartArgs {
  std::string config;
  std::vector<std::string> sets;
  bool blocking = false;
  double timeout_s = 60;
  double grace_s = 30;
};

int Start(const StartArgs& a, bool json) {
  const std::string config_path = ResolveConfig(a.config);
  // One registry per CISTERN_HOME: a live current session wins; a dead one is
  // replaced.
  if (auto cur = FindSession(""); cur) {
    if (Alive(cur->pid)) {
      std::fprintf(stderr,
                   "cistern: cistern-registry is already running: session %s, pid %d, endpoint %s\n"
                   "  stop it with `cistern registry stop` or use it as it is\n",
                   cur->session_id.c_str(), cur->pid,
                   cur->endpoint.empty() ? "(not reported)" : cur->endpoint.c_str());
      return 1;
    }
    std::fprintf(stderr, "cistern: replacing stale session %s (pid %d is not running)\n",
                 cur->session_id.c_str(), cur->pid);
  }
  // The effective config: state under $CISTERN_HOME/registry unless the file
  // says otherwise; --set wins over both.
  const std::string source = config_path.empty() ? "registry config (no --config)" : config_path;
  config::RegistryServerConfig cfg;
  if (!config_path.empty()) {
    if (absl::Status s = LoadYamlFile(config_path, &cfg); !s.ok()) {
      std::fprintf(stderr, "cistern: %s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  for (const std::string& set : a.sets) {
    if (absl::Status s = ApplyOverride(set, &cfg); !s.ok()) {
      std::fprintf(stderr, "cistern: --set %s: %s\n", set.c_str(),
                   std::string(s.message()).c_str());
      return 2;
    }
  }
  ::setenv("CISTERN_HOME", paths::HomeDir().c_str(), 1);  // defaults derive from it
  const fs::path home = RegistryDir();
  if (cfg.state_dir().empty()) cfg.set_state_dir((home / "state").string());
  Meta m = Sessions().NewSession();
  // In the background the registry logs to the session's rotated log file.
  if (!a.blocking && cfg.log_file().empty()) {
    cfg.set_log_file((m.dir / "logs" / "stdout.log").string());
  }
  config::ApplyRegistryDefaults(&cfg);
  if (absl::Status s = config::ValidateRegistryConfig(cfg); !s.ok()) {
    std::fprintf(stderr, "cistern: %s: %s\n", source.c_str(), std::string(s.message()).c_str());
    return 2;
  }
  m.version = CISTERN_VERSION;
  m.config = config_path;
  m.state_dir = cfg.state_dir();
  std::error_code ec;
  fs::create_directories(m.dir / "logs", ec);
  for (const fs::path& dir : {fs::path(cfg.state_dir()), fs::path(cfg.database()).parent_path()}) {
    fs::create_directories(dir, ec);
    if (ec || ::access(dir.c_str(), W_OK) != 0) {
      if (dir == fs::path(cfg.state_dir())) {
        std::fprintf(stderr, "cistern: state_dir '%s' is not writable\n", dir.c_str());
      } else {
        std::fprintf(stderr, "cistern: database '%s': directory '%s' is not writable\n",
                     cfg.database().c_str(), dir.c_str());
      }
      fs::remove_all(m.dir, ec);
      return 2;
    }
  }
  const std::string effective = (m.dir / "config.yaml").string();
  {
    std::ofstream(effective) << ToYaml(cfg);
    fs::permissions(effective, fs::perms::owner_read | fs::perms::owner_write, ec);
  }
  const fs::path out =
      cfg.log_file().empty() ? m.dir / "logs" / "stdout.log" : fs::path(cfg.log_file());
  const fs::path err = m.dir / "logs" / "stderr.log";
  // A previous run's endpoint file would pass for readiness.
  const fs::path endpoint_file = EndpointFile(cfg.state_dir());
  fs::remove(endpoint_file, ec);

  const std::string bin = RegistryBinary();
  pid_t pid = Sessions().Spawn(bin, effective, err, a.blocking);
  if (pid < 0) {
    std::fprintf(stderr, "cistern: fork: %s\n", std::strerror(errno));
    fs::remove_all(m.dir, ec);
    return 1;
  }
  m.pid = pid;
  m.start_unix_ms = UnixMs();
  Sessions().WriteMeta(m);
  Sessions().SetCurrent(m.session_id);

  if (a.blocking) return Sessions().WaitInForeground(pid, a.grace_s);

  // Background: wait until it serves, saying so when it takes a while.
  const bool tls = !cfg.tls().cert_file().empty();
  std::optional<v1::QuerySystemReply> system;
  auto begin = SteadyClock::now();
  auto next_note = begin + std::chrono::seconds(3);
  auto deadline = begin + std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  auto give_up = [&](const std::string& why) {
    Sessions().StopProcess(pid, std::chrono::seconds(5), true);
    Sessions().ClearCurrent();
    std::fprintf(stderr, "cistern: %s. Last log lines:\n%s%s", why.c_str(),
                 LastLines(out, 10).c_str(), LastLines(err, 10).c_str());
    return 1;
  };
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      std::fprintf(
          stderr, "cistern: cistern-registry exited during start (%s). Last log lines:\n%s%s",
          ExitDescription(status).c_str(), LastLines(out, 10).c_str(), LastLines(err, 10).c_str());
      Sessions().ClearCurrent();
      return WIFEXITED(status) && WEXITSTATUS(status) == 2 ? 2 : 1;
    }
    bool ready = false;
    if (std::optional<std::string> ep = ReadEndpointFile(endpoint_file)) {
      m.endpoint = *ep;
      m.metrics = MetricsEndpoint(cfg, out);
      if (!tls) {
        // Any answer but Unavailable / DeadlineExceeded (not serving yet) is
        // final: a refusal names its reason.
        cluster::RegistryClientOptions o = SessionClientOptions(cfg, m.endpoint, {});
        o.rpc_timeout = std::chrono::seconds(2);
        auto q = QuerySystem(o);
        if (q.ok()) {
          system = std::move(*q);
          ready = true;
        } else if (q.status().code() != absl::StatusCode::kUnavailable &&
                   q.status().code() != absl::StatusCode::kDeadlineExceeded) {
          return give_up(
              fmt::format("cistern-registry (pid {}) refused the readiness probe: {}; "
                          "it was stopped",
                          pid, std::string(q.status().message())));
        }
      } else {
        // The endpoint file is written once the port serves; /health says
        // ready just after. Without a known metrics port the file is all.
        ready = m.metrics.empty() || HttpStatus(m.metrics, "/health") == 200;
      }
    }
    if (ready) break;
    auto now = SteadyClock::now();
    if (now > deadline) {
      return give_up(
          fmt::format("cistern-registry did not become ready within {:.0f} s", a.timeout_s));
    }
    if (now > next_note) {
      std::fprintf(stderr, "cistern: waiting for cistern-registry (pid %d) to become ready...\n",
                   pid);
      next_note = now + std::chrono::seconds(2);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Sessions().WriteMeta(m);
  Sessions().Prune(m.session_id);
  if (json) {
    PrintJson({{"session", m.session_id},
               {"pid", pid},
               {"endpoint", m.endpoint},
               {"metrics", m.metrics},
               {"cluster_id", cfg.cluster_id()},
               {"epoch", system ? Json(system->registry_epoch()) : Json()},
               {"tls", tls},
               {"state_dir", cfg.state_dir()},
               {"logs", (m.dir / "logs").string()}});
  } else {
    std::printf("cistern-registry started: session %s, pid %d, endpoint %s%s\n",
                m.session_id.c_str(), pid, m.endpoint.c_str(), tls ? " (TLS)" : "");
    if (system) {
      std::printf("cluster '%s', epoch %llu\n", cfg.cluster_id().c_str(),
                  static_cast<unsigned long long>(system->registry_epoch()));
    } else {
      std::printf("cluster '%s'\n", cfg.cluster_id().c_str());
    }
    std::printf("metrics: %s\nstate: %s\nlogs: %s\n",
                m.metrics.empty() ? "unknown (see the log)"
                                  : fmt::format("http://{}/metrics", m.metrics).c_str(),
                cfg.state_dir().c_str(), (m.dir / "logs").c_str());
  }
  return 0;
}

// Every host state but UNSPECIFIED, in enum order, with how many hosts of
// `q` are in it.
std::vector<std::pair<std::string, int>> HostsByState(const v1::QuerySystemReply& q) {
  std::vector<std::pair<std::string, int>> out;
  for (int s = v1::HostState_MIN; s <= v1::HostState_MAX; ++s) {
    if (!v1::HostState_IsValid(s) || s == v1::HOST_STATE_UNSPECIFIED) continue;
    int n = 0;
    for (const auto& h : q.hosts()) n += h.state() == s;
    out.emplace_back(HostStateName(static_cast<v1::HostState>(s)), n);
  }
  return out;
}

int Status(const RegistryTarget& flags, bool json) {
  auto m = FindSession("");
  if (!m || !Alive(m->pid)) {
    if (json) {
      PrintJson({{"running", false}, {"session", m ? Json(m->session_id) : Json()}});
    } else if (m) {
      std::printf("cistern-registry is not running (session %s, pid %d is gone)\n",
                  m->session_id.c_str(), m->pid);
    } else {
      std::printf("cistern-registry is not running (no session under %s)\n", RegistryDir().c_str());
    }
    return 1;
  }
  std::optional<config::RegistryServerConfig> cfg = SessionConfig(*m);
  std::string endpoint = cfg ? SessionEndpoint(*m, *cfg) : m->endpoint;
  std::string metrics = m->metrics;
  if (metrics.empty() && cfg) {
    metrics = MetricsEndpoint(
        *cfg, cfg->log_file().empty() ? m->dir / "logs" / "stdout.log" : fs::path(cfg->log_file()));
  }
  const bool tls = cfg && !cfg->tls().cert_file().empty();
  const int health = metrics.empty() ? 0 : HttpStatus(metrics, "/health");
  absl::StatusOr<v1::QuerySystemReply> q =
      !cfg ? absl::FailedPreconditionError(fmt::format("the session's config '{}' cannot be read",
                                                       (m->dir / "config.yaml").string()))
      : endpoint.empty() ? absl::UnavailableError("the registry has not reported its endpoint yet")
                         : QuerySystem(SessionClientOptions(*cfg, endpoint, flags));
  // With TLS the CLI may not trust the registry's certificate: /health decides.
  const bool healthy = q.ok() || (tls && health == 200);
  const double uptime_s =
      m->start_unix_ms == 0 ? 0 : std::max<double>(0, (UnixMs() - m->start_unix_ms) / 1000.0);
  if (json) {
    Json j = {{"running", true},
              {"healthy", healthy},
              {"session", m->session_id},
              {"pid", m->pid},
              {"version", m->version},
              {"uptime_s", std::round(uptime_s * 10) / 10},
              {"endpoint", endpoint},
              {"metrics", metrics},
              {"health", health == 0 ? Json() : Json(health)},
              {"tls", tls},
              {"state_dir", cfg ? cfg->state_dir() : m->state_dir},
              {"database", cfg ? Json(cfg->database()) : Json()}};
    if (q.ok()) {
      Json by_state = Json::object();
      for (const auto& [name, n] : HostsByState(*q)) by_state[name] = n;
      j["hosts_by_state"] = std::move(by_state);
      j["system"] = ProtoToJson(*q);
    } else {
      j["hosts_by_state"] = nullptr;
      j["system"] = nullptr;
      j["error"] = std::string(q.status().message());
    }
    PrintJson(j);
    return healthy ? 0 : 1;
  }
  if (!healthy) {
    std::printf("cistern-registry pid %d (session %s) is running but not answering: %s\n", m->pid,
                m->session_id.c_str(), std::string(q.status().message()).c_str());
    return 1;
  }
  std::printf("cistern-registry %s: healthy, pid %d, up %.0f s, session %s\n", m->version.c_str(),
              m->pid, uptime_s, m->session_id.c_str());
  std::printf("endpoint: %s%s\n", endpoint.c_str(), tls ? " (TLS)" : "");
  std::printf("metrics: %s\n", metrics.empty()
                                   ? "unknown (metrics_port 0 and no \"metrics on\" log line)"
                                   : fmt::format("http://{}/metrics", metrics).c_str());
  if (cfg) std::printf("database: %s\n", cfg->database().c_str());
  if (!q.ok()) {
    std::printf("cluster: not queried: %s (pass --ca-file, and --cert-file/--key-file for mTLS)\n",
                std::string(q.status().message()).c_str());
    return 0;
  }
  std::vector<std::string> states;
  for (const auto& [name, n] : HostsByState(*q)) {
    if (n > 0) states.push_back(fmt::format("{} {}", n, name));
  }
  std::printf(
      "cluster '%s', epoch %llu: %d host%s%s, %llu keys, %llu replicas, %llu transfers in "
      "flight\n",
      q->cluster_id().c_str(), static_cast<unsigned long long>(q->registry_epoch()),
      q->hosts_size(), q->hosts_size() == 1 ? "" : "s",
      states.empty() ? "" : fmt::format(" ({})", absl::StrJoin(states, ", ")).c_str(),
      static_cast<unsigned long long>(q->keys()), static_cast<unsigned long long>(q->replicas()),
      static_cast<unsigned long long>(q->transfers_in_flight()));
  return 0;
}

int Logs(const std::string& id, bool follow, bool err) {
  return Sessions().LogsCommand(id, follow, err, [](const Meta& m) {
    SessionStore::LogFiles f;
    if (std::optional<config::RegistryServerConfig> cfg = SessionConfig(m)) {
      f.log_file = cfg->log_file();
      f.rotated_files = static_cast<int>(cfg->log_max_files());
    }
    return f;
  });
}

}  // namespace

std::string HostStateName(v1::HostState state) {
  std::string name = v1::HostState_Name(state);
  constexpr std::string_view kPrefix = "HOST_STATE_";
  if (name.rfind(kPrefix, 0) == 0) name = name.substr(kPrefix.size());
  if (name.empty()) return fmt::format("state {}", static_cast<int>(state));
  return absl::AsciiStrToLower(name);
}

void AddRegistryTargetOptions(CLI::App* c, RegistryTarget* t) {
  c->add_option("--registry", t->address,
                "HOST:PORT of cistern-registry, with --cluster-id and --token (default: the "
                "current `cistern registry start` session, else the current daemon session's "
                "cluster.registry)");
  c->add_option("--cluster-id", t->cluster_id, "the cluster's id (needed with --registry)");
  c->add_option("--ca-file", t->ca_file, "TLS: the CA the registry's certificate chains to");
  c->add_option("--cert-file", t->cert_file, "mTLS: this client's certificate");
  c->add_option("--key-file", t->key_file, "mTLS: this client's private key");
  c->add_option("--server-name", t->server_name,
                "TLS: the name the registry's certificate must carry");
}

absl::StatusOr<FoundRegistry> FindRegistry(const RegistryTarget& t) {
  StartGrpc();
  FoundRegistry f;
  cluster::RegistryClientOptions& o = f.options;
  auto apply_flags = [&] {
    if (!t.cluster_id.empty()) o.cluster_id = t.cluster_id;
    if (!t.token.empty()) o.token = t.token;
    if (!t.ca_file.empty()) o.ca_file = t.ca_file;
    if (!t.cert_file.empty()) o.cert_file = t.cert_file;
    if (!t.key_file.empty()) o.key_file = t.key_file;
    if (!t.server_name.empty()) o.server_name = t.server_name;
  };
  if (!t.address.empty()) {
    if (t.cluster_id.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("--registry {} needs --cluster-id ID (the cluster it serves)", t.address));
    }
    if (t.token.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("--registry {} needs --token T (the cluster's shared secret)", t.address));
    }
    o.address = t.address;
    apply_flags();
    f.source = "--registry";
    return f;
  }
  std::vector<std::string> looked;
  // The local registry session.
  if (std::optional<Meta> m = FindSession(""); m && Alive(m->pid)) {
    std::optional<config::RegistryServerConfig> cfg = SessionConfig(*m);
    std::string endpoint = cfg ? SessionEndpoint(*m, *cfg) : "";
    if (cfg && !endpoint.empty()) {
      o = SessionClientOptions(*cfg, endpoint, t);
      f.source = fmt::format("registry session {}", m->session_id);
      return f;
    }
    looked.push_back(
        cfg ? fmt::format("registry session {} (pid {}) has not reported its endpoint yet",
                          m->session_id, m->pid)
            : fmt::format("registry session {} has no readable config.yaml", m->session_id));
  } else if (m) {
    looked.push_back(
        fmt::format("registry session {} is not running (pid {} is gone)", m->session_id, m->pid));
  } else {
    looked.push_back(fmt::format("no registry session under {}", RegistryDir().string()));
  }
  // The current daemon session's cluster membership.
  const fs::path host = paths::HostDir();
  std::string daemon_session;
  std::ifstream(host / "current_session") >> daemon_session;
  if (!daemon_session.empty() && daemon_session.find('/') == std::string::npos) {
    const fs::path path = host / "sessions" / daemon_session / "config.yaml";
    config::DaemonConfig dc;
    if (!LoadYamlFile(path.string(), &dc).ok()) {
      looked.push_back(
          fmt::format("daemon session {} has no readable config.yaml", daemon_session));
    } else if (dc.cluster().registry().empty()) {
      looked.push_back(fmt::format("daemon session {} is not in a cluster (no cluster.registry)",
                                   daemon_session));
    } else {
      const config::ClusterConfig& c = dc.cluster();
      o.address = c.registry();
      o.cluster_id = c.cluster_id();
      o.token = c.token();
      o.ca_file = c.tls().ca_file();
      o.cert_file = c.tls().cert_file();
      o.key_file = c.tls().key_file();
      o.server_name = c.tls().server_name();
      if (c.rpc_timeout_ms() > 0) o.rpc_timeout = std::chrono::milliseconds(c.rpc_timeout_ms());
      apply_flags();
      f.source = fmt::format("daemon session {} (cluster.registry)", daemon_session);
      return f;
    }
  } else {
    looked.push_back(fmt::format("no daemon session under {}", host.string()));
  }
  return absl::NotFoundError(fmt::format(
      "no registry to ask: pass --registry HOST:PORT --cluster-id ID --token T, or start one "
      "with `cistern registry start` ({})",
      absl::StrJoin(looked, "; ")));
}

void RegisterRegistryCommands(CLI::App* app, Target* target, const bool* json, int* rc) {
  auto* r = app->add_subcommand("registry",
                                "run cistern-registry (the cluster registry) in the background "
                                "and manage it");
  r->require_subcommand(1);

  static StartArgs start;
  auto add_start_options = [](CLI::App* c) {
    c->add_option("--config", start.config,
                  "config file (default: $CISTERN_REGISTRY_CONFIG, else none: defaults and --set)");
    c->add_option("--set", start.sets, "override a config key, e.g. --set port=0");
    c->add_option("--timeout", start.timeout_s, "seconds to wait for readiness (default 60)");
  };
  auto* s = r->add_subcommand("start", "start cistern-registry and wait until it serves");
  add_start_options(s);
  s->add_flag("--blocking", start.blocking,
              "run in the foreground, logging to this terminal; SIGINT/SIGTERM stop it");
  s->add_option("--grace", start.grace_s, "with --blocking: seconds between SIGTERM and SIGKILL");
  s->callback([=] { *rc = Start(start, *json); });

  static StopArgs stop;
  AddStopAndRestart(
      r, &Sessions(), &stop, &start.config, add_start_options, [=] { return Start(start, *json); },
      json, rc);

  static RegistryTarget tls_flags;
  auto* status = r->add_subcommand(
      "status", "health, endpoints and the cluster's hosts of the current registry session");
  status->add_option("--ca-file", tls_flags.ca_file,
                     "TLS: the CA to trust (default: the registry's own tls.cert_file)");
  status->add_option("--cert-file", tls_flags.cert_file, "mTLS: this client's certificate");
  status->add_option("--key-file", tls_flags.key_file, "mTLS: this client's private key");
  status->add_option("--server-name", tls_flags.server_name,
                     "TLS: the name the registry's certificate must carry");
  status->callback([=] {
    RegistryTarget t = tls_flags;
    t.token = target->token;
    *rc = Status(t, *json);
  });

  static bool follow = false, err = false;
  auto* logs = r->add_subcommand("logs", "print a session's log (default: the current one)");
  logs->add_option("SESSION_ID", stop.session);
  logs->add_flag("-f,--follow", follow, "keep printing as the log grows");
  logs->add_flag("--stderr", err, "print stderr (crash output, config errors)");
  logs->callback([=] { *rc = Logs(stop.session, follow, err); });
}

}  // namespace cistern::cli
