// Daemon sessions. Each `cistern daemon start` creates
//   $CISTERN_HOME/hosts/<host_id>/sessions/<session_id>/
//       config.yaml   the effective config the daemon runs with
//       meta.json     pid, socket, version, start time (written right after fork,
//                     before the daemon is ready, so clients can find it)
//       logs/stdout.log   the daemon's log (its log_file unless the config
//                         names another), rotated at log_max_bytes into
//                         stdout.1.log ... stdout.<log_max_files>.log
//       logs/stderr.log   the daemon's stdout and stderr: what it prints
//                         before its log is set up (usage and config errors)
//                         and crash reports; the daemon rotates it alike
//                         (stderr.1.log ...)
// and points $CISTERN_HOME/hosts/<host_id>/current_session at it. Unless the
// config says otherwise, every session of the host uses
//   $CISTERN_HOME/hosts/<host_id>/run/     the socket (runtime_dir)
//   $CISTERN_HOME/hosts/<host_id>/state/   durable state: registry.db, the
//                                          stream ledgers (state_dir)
// so streams outlive sessions (restart, stale-session replacement). One daemon
// runs per host and CISTERN_HOME: a start while the current session's process
// is alive fails; a session whose process is gone (kill -9, reboot) is stale
// and is replaced. A start that succeeds keeps the newest kSessionsKept
// session directories and removes older ones whose daemon is gone. <host_id> is the hostname plus
// the start of /etc/machine-id.
#include "src/cli/daemon_commands.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "fmt/format.h"
#include "include/cistern/client.h"
#include "src/cli/data_commands.h"
#include "src/cli/proto_json.h"
#include "src/cli/sessions.h"
#include "src/common/clock.h"
#include "src/common/paths.h"
#include "src/config/config_yaml.h"
#include "src/config/daemon_config.h"

namespace cistern::cli {
namespace fs = std::filesystem;
namespace {

using SteadyClock = std::chrono::steady_clock;

using Meta = SessionMeta;

const SessionStore& Sessions() {
  static const SessionStore store("daemon", "cisternd", paths::HostDir());
  return store;
}

fs::path HostDir() { return Sessions().root(); }
bool Alive(int pid) { return Sessions().Alive(pid); }
std::optional<Meta> FindSession(const std::string& id) { return Sessions().Find(id); }

// Where the config comes from when --config is absent.
absl::StatusOr<std::string> ResolveConfig(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* e = std::getenv("CISTERN_CONFIG"); e && *e) return std::string(e);
  std::vector<fs::path> candidates;
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec).parent_path();
  candidates.push_back(self / "../share/cistern/cisternd.yaml");
  candidates.push_back(fs::path(CISTERN_SOURCE_DIR) / "deploy/config/cisternd.yaml");
  std::string looked = "$CISTERN_CONFIG (unset)";
  for (const fs::path& p : candidates) {
    if (fs::exists(p, ec)) return fs::weakly_canonical(p, ec).string();
    looked += ", " + p.lexically_normal().string();
  }
  return absl::NotFoundError("no config file: pass --config FILE; looked at " + looked);
}

std::string DaemonBinary() {
  if (const char* e = std::getenv("CISTERN_DAEMON_BIN"); e && *e) return e;
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& p : {self / "cisternd", self / "../daemon/cisternd"}) {
    if (fs::exists(p, ec)) return fs::weakly_canonical(p, ec).string();
  }
  return "cisternd";  // from PATH
}

// The token a command presents: --token, else $CISTERN_TOKEN, else
// `configured` (the token of the daemon's own config, when it can be read).
std::string TokenFor(const Target& t, const std::string& configured) {
  if (!t.token.empty()) return t.token;
  if (const char* k = std::getenv("CISTERN_TOKEN"); k && *k) return k;
  return configured;
}

absl::StatusOr<std::unique_ptr<Client>> Probe(const std::string& socket, const std::string& token) {
  ConnectOptions o;
  o.socket_path = socket;
  o.client_name = "cistern-cli";
  o.token = token;
  return Client::Connect(o);
}

// The session's effective config (config.yaml); nullopt when it cannot be read.
std::optional<config::DaemonConfig> SessionConfig(const Meta& m) {
  config::DaemonConfig cfg;
  if (!LoadYamlFile((m.dir / "config.yaml").string(), &cfg).ok()) return std::nullopt;
  return cfg;
}

struct StartArgs {
  std::string config;
  std::vector<std::string> sets;
  bool blocking = false;
  double timeout_s = 60;
  double grace_s = 30;
};

int Start(const StartArgs& a, const Target& target, bool json) {
  auto config_path = ResolveConfig(a.config);
  if (!config_path.ok()) {
    std::fprintf(stderr, "cistern: %s\n", std::string(config_path.status().message()).c_str());
    return 2;
  }
  // One daemon per host: a live current session wins; a dead one is replaced.
  if (auto cur = FindSession(""); cur) {
    if (Alive(cur->pid)) {
      std::fprintf(stderr,
                   "cistern: cisternd is already running: session %s, pid %d, socket %s\n"
                   "  stop it with `cistern daemon stop` or use it as it is\n",
                   cur->session_id.c_str(), cur->pid, cur->socket.c_str());
      return 1;
    }
    std::fprintf(stderr, "cistern: replacing stale session %s (pid %d is not running)\n",
                 cur->session_id.c_str(), cur->pid);
  }
  // The effective config: runtime state under the host directory unless the
  // file says otherwise; --set wins over both.
  config::DaemonConfig cfg;
  if (absl::Status s = LoadYamlFile(*config_path, &cfg); !s.ok()) {
    std::fprintf(stderr, "cistern: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  fs::path host = HostDir();
  if (cfg.runtime_dir().empty()) cfg.set_runtime_dir((host / "run").string());
  if (cfg.state_dir().empty()) cfg.set_state_dir((host / "state").string());
  for (const std::string& set : a.sets) {
    if (absl::Status s = ApplyOverride(set, &cfg); !s.ok()) {
      std::fprintf(stderr, "cistern: --set %s: %s\n", set.c_str(),
                   std::string(s.message()).c_str());
      return 2;
    }
  }
  ::setenv("CISTERN_HOME", paths::HomeDir().c_str(), 1);  // defaults derive from it
  Meta m = Sessions().NewSession();
  // In the background the daemon logs to the session's rotated log file.
  if (!a.blocking && cfg.log_file().empty()) {
    cfg.set_log_file((m.dir / "logs" / "stdout.log").string());
  }
  config::ApplyDefaults(&cfg);
  if (absl::Status s = config::ValidateDaemonConfig(cfg); !s.ok()) {
    std::fprintf(stderr, "cistern: %s: %s\n", config_path->c_str(),
                 std::string(s.message()).c_str());
    return 2;
  }
  m.socket = cfg.socket_path();
  m.version = CISTERN_VERSION;
  m.config = *config_path;
  std::error_code ec;
  fs::create_directories(m.dir / "logs", ec);
  fs::create_directories(cfg.runtime_dir(), ec);
  if (ec || ::access(cfg.runtime_dir().c_str(), W_OK) != 0) {
    std::fprintf(stderr, "cistern: runtime_dir '%s' is not writable\n", cfg.runtime_dir().c_str());
    return 2;
  }
  // Durable state: the registry database, in state_dir unless registry.path
  // names another place.
  for (const fs::path& dir :
       {fs::path(cfg.state_dir()), fs::path(cfg.registry().path()).parent_path()}) {
    fs::create_directories(dir, ec);
    if (ec || ::access(dir.c_str(), W_OK) != 0) {
      if (dir == fs::path(cfg.state_dir())) {
        std::fprintf(stderr, "cistern: state_dir '%s' is not writable\n", dir.c_str());
      } else {
        std::fprintf(stderr, "cistern: registry.path '%s': directory '%s' is not writable\n",
                     cfg.registry().path().c_str(), dir.c_str());
      }
      return 2;
    }
  }
  std::string effective = (m.dir / "config.yaml").string();
  std::ofstream(effective) << ToYaml(cfg);
  fs::path out = cfg.log_file().empty() ? m.dir / "logs" / "stdout.log" : fs::path(cfg.log_file());
  fs::path err = m.dir / "logs" / "stderr.log";

  std::string bin = DaemonBinary();
  pid_t pid = Sessions().Spawn(bin, effective, err, a.blocking);
  if (pid < 0) {
    std::fprintf(stderr, "cistern: fork: %s\n", std::strerror(errno));
    return 1;
  }
  m.pid = pid;
  m.start_unix_ms = UnixMs();
  Sessions().WriteMeta(m);
  Sessions().SetCurrent(m.session_id);

  if (a.blocking) return Sessions().WaitInForeground(pid, a.grace_s);

  // Background: wait until it answers, saying so when it takes a while.
  auto begin = SteadyClock::now();
  auto next_note = begin + std::chrono::seconds(3);
  auto deadline = begin + std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      std::fprintf(stderr, "cistern: cisternd exited during start (%s). Last log lines:\n%s%s",
                   ExitDescription(status).c_str(), LastLines(out, 10).c_str(),
                   LastLines(err, 10).c_str());
      Sessions().ClearCurrent();
      return WIFEXITED(status) && WEXITSTATUS(status) == 2 ? 2 : 1;
    }
    // The probe presents the token the daemon was configured with. Any answer
    // but Unavailable (not listening yet) is final: a refusal names its reason.
    auto c = Probe(m.socket, cfg.token().empty() ? TokenFor(target, "") : cfg.token());
    if (c.ok()) {
      if (auto st = (*c)->Status(); st.ok()) {
        m.metrics = st->metrics_endpoint();
        Sessions().WriteMeta(m);
      }
      break;
    }
    if (c.status().code() != absl::StatusCode::kUnavailable) {
      Sessions().StopProcess(pid, std::chrono::seconds(5), true);
      Sessions().ClearCurrent();
      std::fprintf(stderr,
                   "cistern: cisternd (pid %d) refused the readiness probe: %s; it was stopped. "
                   "Last log lines:\n%s%s",
                   pid, std::string(c.status().message()).c_str(), LastLines(out, 10).c_str(),
                   LastLines(err, 10).c_str());
      return 1;
    }
    auto now = SteadyClock::now();
    if (now > deadline) {
      Sessions().StopProcess(pid, std::chrono::seconds(5), true);
      Sessions().ClearCurrent();
      std::fprintf(stderr,
                   "cistern: cisternd did not become ready within %.0f s. Last log lines:\n%s%s",
                   a.timeout_s, LastLines(out, 10).c_str(), LastLines(err, 10).c_str());
      return 1;
    }
    if (now > next_note) {
      std::fprintf(stderr, "cistern: waiting for cisternd (pid %d) to become ready...\n", pid);
      next_note = now + std::chrono::seconds(2);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Sessions().Prune(m.session_id);
  if (json) {
    PrintJson({{"session", m.session_id},
               {"pid", pid},
               {"socket", m.socket},
               {"metrics", m.metrics},
               {"logs", (m.dir / "logs").string()}});
  } else {
    std::printf(
        "cisternd started: session %s, pid %d, socket %s\nmetrics: http://%s/metrics\nlogs: %s\n",
        m.session_id.c_str(), pid, m.socket.c_str(), m.metrics.c_str(), (m.dir / "logs").c_str());
  }
  return 0;
}

int Status(const Target& target, bool json) {
  auto m = FindSession("");
  if (!m || !Alive(m->pid)) {
    if (json) {
      PrintJson(
          {{"running", false},
           {"session", m ? nlohmann::ordered_json(m->session_id) : nlohmann::ordered_json()}});
    } else if (m) {
      std::printf("cisternd is not running (session %s, pid %d is gone)\n", m->session_id.c_str(),
                  m->pid);
    } else {
      std::printf("cisternd is not running (no session under %s)\n", HostDir().c_str());
    }
    return 1;
  }
  std::optional<config::DaemonConfig> session_cfg = SessionConfig(*m);
  auto c = Probe(m->socket, TokenFor(target, session_cfg ? session_cfg->token() : ""));
  absl::StatusOr<DaemonStatus> st = c.ok() ? (*c)->Status() : c.status();
  if (!st.ok()) {
    if (json) {
      PrintJson({{"running", true},
                 {"healthy", false},
                 {"session", m->session_id},
                 {"pid", m->pid},
                 {"error", std::string(st.status().message())}});
    } else {
      std::printf("cisternd pid %d (session %s) is running but not answering: %s\n", m->pid,
                  m->session_id.c_str(), std::string(st.status().message()).c_str());
    }
    return 1;
  }
  std::string state_dir = session_cfg ? session_cfg->state_dir() : "";
  std::string registry = session_cfg ? session_cfg->registry().path() : "";
  if (json) {
    // Tiers and sessions field for field (wire::TierStats, wire::SessionInfo).
    nlohmann::ordered_json tiers = nlohmann::ordered_json::array();
    for (const auto& t : st->stats().tiers()) tiers.push_back(ProtoToJson(t));
    nlohmann::ordered_json sessions = nlohmann::ordered_json::array();
    for (const auto& s : st->sessions()) {
      nlohmann::ordered_json j = ProtoToJson(s);
      j["client"] = s.client_name();  // the name this key had before
      sessions.push_back(std::move(j));
    }
    PrintJson({{"running", true},
               {"healthy", true},
               {"session", m->session_id},
               {"pid", st->pid()},
               {"version", st->version()},
               {"uptime_s", std::round(st->uptime_ms() / 100.0) / 10},
               {"socket", st->socket_path()},
               {"metrics", st->metrics_endpoint()},
               {"state_dir", state_dir},
               {"registry", registry},
               {"objects", st->stats().objects()},
               {"leases", st->stats().leases()},
               {"pending_writes", st->stats().pending_writes()},
               {"reserved_bytes", st->stats().reserved_bytes()},
               {"deferred_frees", st->stats().deferred_frees()},
               {"parked_requests", st->parked_requests()},
               {"tiers", tiers},
               {"sessions", sessions},
               {"cluster",
                st->has_cluster() ? ProtoToJson(st->cluster()) : nlohmann::ordered_json(nullptr)}});
    return 0;
  }
  std::printf(
      "cisternd %s: healthy, pid %d, up %.0f s, session %s\nsocket: %s\nmetrics: "
      "http://%s/metrics\n",
      st->version().c_str(), st->pid(), st->uptime_ms() / 1000.0, m->session_id.c_str(),
      st->socket_path().c_str(), st->metrics_endpoint().c_str());
  if (!registry.empty()) std::printf("registry: %s\n", registry.c_str());
  if (st->has_cluster()) {
    const auto& c = st->cluster();
    std::printf(
        "cluster: %s, registry %s, host '%s' (number %u, epoch %llu), %llu changes "
        "published, %llu pending\n",
        c.state().c_str(), c.registry().c_str(), c.host_id().c_str(), c.host_number(),
        static_cast<unsigned long long>(c.registry_epoch()),
        static_cast<unsigned long long>(c.published()),
        static_cast<unsigned long long>(c.pending()));
    if (!c.last_error().empty()) std::printf("cluster last error: %s\n", c.last_error().c_str());
  }
  std::printf("objects: %llu, leases: %llu, unsealed writes: %llu, parked requests: %llu\n",
              static_cast<unsigned long long>(st->stats().objects()),
              static_cast<unsigned long long>(st->stats().leases()),
              static_cast<unsigned long long>(st->stats().pending_writes()),
              static_cast<unsigned long long>(st->parked_requests()));
  std::printf("%-12s %12s %12s %12s %10s\n", "tier", "total", "used", "evictable", "evictions");
  for (const auto& t : st->stats().tiers()) {
    std::printf("%-12s %12s %12s %12s %10llu\n", t.name().c_str(),
                HumanBytes(t.capacity_bytes()).c_str(), HumanBytes(t.used_bytes()).c_str(),
                HumanBytes(t.evictable_bytes()).c_str(),
                static_cast<unsigned long long>(t.evictions()));
  }
  std::printf("sessions (%d):\n", st->sessions_size());
  for (const auto& s : st->sessions()) {
    std::printf("  #%llu pid %d %-20s leases %llu, unsealed writes %llu\n",
                static_cast<unsigned long long>(s.id()), s.pid(), s.client_name().c_str(),
                static_cast<unsigned long long>(s.leases()),
                static_cast<unsigned long long>(s.pending_writes()));
  }
  return 0;
}

int Logs(const std::string& id, bool follow, bool err) {
  return Sessions().LogsCommand(id, follow, err, [](const Meta& m) {
    SessionStore::LogFiles f;
    if (std::optional<config::DaemonConfig> cfg = SessionConfig(m)) {
      f.log_file = cfg->log_file();
      f.rotated_files = static_cast<int>(cfg->log_max_files());
    }
    return f;
  });
}

}  // namespace

void RegisterDaemonCommands(CLI::App* app, Target* target, const bool* json, int* rc) {
  auto* d = app->add_subcommand("daemon", "run cisternd in the background and manage it");
  d->require_subcommand(1);

  static StartArgs start;
  auto add_start_options = [](CLI::App* c) {
    c->add_option("--config", start.config,
                  "config file (default: $CISTERN_CONFIG, then the shipped example)");
    c->add_option("--set", start.sets, "override a config key, e.g. --set tiers.0.size=4GB");
    c->add_option("--timeout", start.timeout_s, "seconds to wait for readiness (default 60)");
  };
  auto* s = d->add_subcommand("start", "start cisternd and wait until it answers");
  add_start_options(s);
  s->add_flag("--blocking", start.blocking,
              "run in the foreground, logging to this terminal; SIGINT/SIGTERM stop it");
  s->add_option("--grace", start.grace_s, "with --blocking: seconds between SIGTERM and SIGKILL");
  s->callback([=] { *rc = Start(start, *target, *json); });

  static StopArgs stop;
  AddStopAndRestart(
      d, &Sessions(), &stop, &start.config, add_start_options,
      [=] { return Start(start, *target, *json); }, json, rc);

  auto* status = d->add_subcommand("status", "health, usage and sessions of the current daemon");
  status->callback([=] { *rc = Status(*target, *json); });

  static bool follow = false, err = false;
  auto* logs = d->add_subcommand("logs", "print a session's log (default: the current one)");
  logs->add_option("SESSION_ID", stop.session);
  logs->add_flag("-f,--follow", follow, "keep printing as the log grows");
  logs->add_flag("--stderr", err, "print stderr (crash output, config errors)");
  logs->callback([=] { *rc = Logs(stop.session, follow, err); });
}

}  // namespace cistern::cli
