// Background sessions of a Cistern server binary, shared by `cistern daemon
// ...` (cisternd, daemon_commands.cc) and `cistern registry ...`
// (cistern-registry, registry_commands.cc). A session store is a directory
//   <root>/current_session        the id of the live session
//   <root>/sessions/<id>/         one `start` each: config.yaml, meta.json,
//                                 logs/stdout.log, logs/stderr.log
// where <root> is $CISTERN_HOME/hosts/<host_id> for daemons and
// $CISTERN_HOME/registry for the registry. What each kind keeps in its
// session is described in its commands file; this file holds the mechanics
// both share: meta.json, liveness, pruning, fork/exec, stopping, logs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"

namespace cistern::cli {

// meta.json of a session. socket is the daemon's; state_dir and endpoint
// the registry's. Empty optional fields are not written.
struct SessionMeta {
  std::string session_id;
  int pid = 0;
  std::string version;
  uint64_t start_unix_ms = 0;
  std::string config;     // the config file given to start; empty: none
  std::string metrics;    // host:port of /metrics, known once ready
  std::string socket;     // daemon: its local socket
  std::string state_dir;  // registry: the effective state_dir
  std::string endpoint;   // registry: host:port of its gRPC port, known once ready
  std::filesystem::path dir;
};

class SessionStore {
 public:
  // `noun` names the kind in messages ("daemon", "registry"); `binary` is
  // the server's executable name, used to tell a live server from a recycled
  // pid.
  SessionStore(std::string noun, std::string binary, std::filesystem::path root)
      : noun_(std::move(noun)), binary_(std::move(binary)), root_(std::move(root)) {}

  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path sessions_dir() const { return root_ / "sessions"; }
  const std::string& binary() const { return binary_; }

  // True if `pid` is a live `binary` (not a zombie, not a recycled pid).
  bool Alive(int pid) const;

  // The session named `id`, else the current one; nullopt when there is none
  // or its meta.json cannot be read.
  std::optional<SessionMeta> Find(const std::string& id) const;

  // A new session directory's meta (id and dir set) for a start.
  SessionMeta NewSession() const;

  void WriteMeta(const SessionMeta& m) const;
  void SetCurrent(const std::string& id) const;
  // Removes current_session if it names `id`; with `id` empty, in any case.
  void ClearCurrent(const std::string& id = "") const;

  // Removes the session directories beyond the newest kSessionsKept (by
  // start time; one without meta.json counts as oldest), except `current`
  // and any whose server is still alive: each holds up to
  // (log_max_files + 1) x log_max_bytes of logs, and a host restarted daily
  // would otherwise fill its disk.
  static constexpr size_t kSessionsKept = 10;
  void Prune(const std::string& current) const;

  // Sends SIGTERM, waits up to `grace`, then SIGKILL. True if it exited in
  // time. `is_child`: reap it with waitpid.
  bool StopProcess(int pid, std::chrono::seconds grace, bool is_child) const;

  // Forks and runs `bin --config config`. Unless `blocking`, the child leaves
  // the terminal's session, its stdout and stderr go to `stderr_log` and its
  // stdin is /dev/null. Returns the child's pid (-1 when fork fails).
  pid_t Spawn(const std::string& bin, const std::string& config,
              const std::filesystem::path& stderr_log, bool blocking) const;

  // --blocking: waits for child `pid`; SIGINT or SIGTERM stop it (SIGKILL
  // after `grace_s`). Its exit status (1 for a signal), 0 when stopped.
  int WaitInForeground(pid_t pid, double grace_s) const;

  // `cistern <noun> stop [SESSION_ID]`.
  int StopCommand(const std::string& id, double grace_s, bool json) const;

  // `cistern <noun> logs [SESSION_ID]` of session `id` (default: the
  // current one): the session's logs/stdout.log, or the config's log_file
  // when `log_of` names one, or with `err` stderr.log; the rotated files
  // first, oldest first; with `follow`, keeps printing as it grows, across
  // rotation.
  struct LogFiles {
    std::string log_file;   // the session config's log_file; "": the session's own
    int rotated_files = 0;  // its log_max_files (both logs are rotated alike)
  };
  int LogsCommand(const std::string& id, bool follow, bool err,
                  const std::function<LogFiles(const SessionMeta&)>& log_of) const;

  // "no daemon session is current" / "no daemon session X".
  std::string NoSession(const std::string& id) const;

 private:
  std::string noun_;
  std::string binary_;
  std::filesystem::path root_;
};

// What `stop` and `restart` were given.
struct StopArgs {
  std::string session;  // stop's SESSION_ID; empty: the current session
  double grace_s = 30;  // --grace
};

// Adds `stop [SESSION_ID] [--grace S]` and `restart [start options]
// [--grace S]` under `parent` (`cistern daemon`, `cistern registry`).
// `add_start_options` adds start's options to restart; restart stops the
// current session if it is alive (its config file is kept unless --config is
// given: `start_config`), then runs `start`.
void AddStopAndRestart(CLI::App* parent, const SessionStore* store, StopArgs* args,
                       std::string* start_config,
                       const std::function<void(CLI::App*)>& add_start_options,
                       std::function<int()> start, const bool* json, int* rc);

// "20261204-031500-<pid>": a session id, by local time and this process.
std::string NewSessionId();

// The last `n` lines of `path`, each indented by two spaces.
std::string LastLines(const std::filesystem::path& path, int n);

// Writes `text` to path.tmp and renames it over `path`.
void WriteFileAtomically(const std::filesystem::path& path, const std::string& text);

// "status 2" / "signal 9" for a waitpid status.
std::string ExitDescription(int status);

}  // namespace cistern::cli
