#include "src/cli/sessions.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>
#include <vector>

#include "fmt/format.h"
#include "src/cli/data_commands.h"
#include "src/common/paths.h"

namespace cistern::cli {
namespace fs = std::filesystem;
namespace {

using SteadyClock = std::chrono::steady_clock;

std::optional<SessionMeta> ReadMeta(const fs::path& dir) {
  std::ifstream in(dir / "meta.json");
  if (!in) return std::nullopt;
  auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  SessionMeta m;
  m.dir = dir;
  m.session_id = j.value("session_id", "");
  m.pid = j.value("pid", 0);
  m.version = j.value("version", "");
  m.start_unix_ms = j.value("start_unix_ms", uint64_t{0});
  m.config = j.value("config", "");
  m.metrics = j.value("metrics", "");
  m.socket = j.value("socket", "");
  m.state_dir = j.value("state_dir", "");
  m.endpoint = j.value("endpoint", "");
  return m;
}

// `base` with `index` before its extension, as the servers' rotation names
// their files: stdout.log -> stdout.1.log.
fs::path Rotated(const fs::path& base, int index) {
  fs::path p = base;
  return p.replace_filename(
      fmt::format("{}.{}{}", base.stem().string(), index, base.extension().string()));
}

// Copies what is left of `in` to stdout.
void Drain(std::ifstream& in) {
  char buf[65536];
  for (;;) {
    in.read(buf, sizeof buf);
    std::streamsize n = in.gcount();
    if (n <= 0) break;
    std::fwrite(buf, 1, n, stdout);
  }
  in.clear();
}

volatile sig_atomic_t g_stop_signal = 0;
void OnStopSignal(int sig) { g_stop_signal = sig; }

}  // namespace

bool SessionStore::Alive(int pid) const { return paths::IsLiveProcess(pid, binary_); }

std::optional<SessionMeta> SessionStore::Find(const std::string& id) const {
  std::string sid = id;
  if (sid.empty()) std::ifstream(root_ / "current_session") >> sid;
  if (sid.empty() || sid.find('/') != std::string::npos) return std::nullopt;
  return ReadMeta(sessions_dir() / sid);
}

SessionMeta SessionStore::NewSession() const {
  SessionMeta m;
  m.session_id = NewSessionId();
  m.dir = sessions_dir() / m.session_id;
  return m;
}

void SessionStore::WriteMeta(const SessionMeta& m) const {
  nlohmann::ordered_json j = {{"session_id", m.session_id}, {"pid", m.pid},
                              {"version", m.version},       {"start_unix_ms", m.start_unix_ms},
                              {"config", m.config},         {"metrics", m.metrics}};
  if (!m.socket.empty()) j["socket"] = m.socket;
  if (!m.state_dir.empty()) j["state_dir"] = m.state_dir;
  if (!m.endpoint.empty()) j["endpoint"] = m.endpoint;
  WriteFileAtomically(m.dir / "meta.json", j.dump(2) + "\n");
}

void SessionStore::SetCurrent(const std::string& id) const {
  WriteFileAtomically(root_ / "current_session", id + "\n");
}

void SessionStore::ClearCurrent(const std::string& id) const {
  std::error_code ec;
  if (!id.empty()) {
    std::string cur;
    std::ifstream(root_ / "current_session") >> cur;
    if (cur != id) return;
  }
  fs::remove(root_ / "current_session", ec);
}

void SessionStore::Prune(const std::string& current) const {
  std::vector<std::pair<uint64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(sessions_dir(), ec)) {
    if (!e.is_directory(ec) || e.path().filename() == current) continue;
    std::optional<SessionMeta> meta = ReadMeta(e.path());
    if (meta && Alive(meta->pid)) continue;
    found.emplace_back(meta ? meta->start_unix_ms : 0, e.path());
  }
  if (found.size() < kSessionsKept) return;  // with `current`, kSessionsKept in all
  std::sort(found.begin(), found.end(), std::greater<>());
  for (size_t i = kSessionsKept - 1; i < found.size(); ++i) fs::remove_all(found[i].second, ec);
}

bool SessionStore::StopProcess(int pid, std::chrono::seconds grace, bool is_child) const {
  ::kill(pid, SIGTERM);
  auto deadline = SteadyClock::now() + grace;
  while (SteadyClock::now() < deadline) {
    if (is_child) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid) return true;
    } else if (!Alive(pid)) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  if (is_child) ::waitpid(pid, nullptr, 0);
  return false;
}

pid_t SessionStore::Spawn(const std::string& bin, const std::string& config,
                          const fs::path& stderr_log, bool blocking) const {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  if (!blocking) {
    // The log goes to log_file (rotated); stdout and stderr carry only what
    // comes before it is set up, and crash reports.
    ::setsid();
    FILE* e = std::freopen(stderr_log.c_str(), "a", stderr);
    (void)e;
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    FILE* i = std::freopen("/dev/null", "r", stdin);
    (void)i;
  }
  ::execlp(bin.c_str(), bin.c_str(), "--config", config.c_str(), nullptr);
  std::fprintf(stderr, "cistern: cannot run '%s': %s\n", bin.c_str(), std::strerror(errno));
  std::_Exit(127);
}

int SessionStore::WaitInForeground(pid_t pid, double grace_s) const {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, 0);
    if (r == pid) break;
    if (r < 0 && errno == EINTR && g_stop_signal) {
      std::fprintf(stderr, "cistern: stopping %s (pid %d)\n", binary_.c_str(), pid);
      StopProcess(pid, std::chrono::seconds(static_cast<int64_t>(grace_s)), true);
      return 0;
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

std::string SessionStore::NoSession(const std::string& id) const {
  return fmt::format("no {} session {}", noun_, id.empty() ? "is current" : id);
}

int SessionStore::StopCommand(const std::string& id, double grace_s, bool json) const {
  auto m = Find(id);
  if (!m) {
    std::fprintf(stderr, "cistern: %s\n", NoSession(id).c_str());
    return 1;
  }
  if (!Alive(m->pid)) {
    std::fprintf(stderr, "cistern: session %s is not running (pid %d is gone)\n",
                 m->session_id.c_str(), m->pid);
    return 1;
  }
  bool clean = StopProcess(m->pid, std::chrono::seconds(static_cast<int64_t>(grace_s)), false);
  if (!clean) {
    std::fprintf(stderr,
                 "cistern: %s (pid %d) did not exit within %.0f s of SIGTERM; killed it with "
                 "SIGKILL\n",
                 binary_.c_str(), m->pid, grace_s);
  }
  ClearCurrent(m->session_id);
  if (json) {
    PrintJson({{"session", m->session_id}, {"pid", m->pid}, {"stopped", true}, {"killed", !clean}});
  } else {
    std::printf("%s stopped: session %s, pid %d%s\n", binary_.c_str(), m->session_id.c_str(),
                m->pid, clean ? "" : " (killed after the grace period)");
  }
  return 0;
}

int SessionStore::LogsCommand(const std::string& id, bool follow, bool err,
                              const std::function<LogFiles(const SessionMeta&)>& log_of) const {
  std::optional<SessionMeta> m = Find(id);
  if (!m) {
    std::fprintf(stderr, "cistern: %s\n", NoSession(id).c_str());
    return 1;
  }
  const LogFiles files = log_of(*m);
  const int rotated_files = files.rotated_files;
  fs::path path = m->dir / "logs" / (err ? "stderr.log" : "stdout.log");
  if (!err && !files.log_file.empty()) path = files.log_file;
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "cistern: no log at %s (a --blocking session logs to its terminal)\n",
                 path.c_str());
    return 1;
  }
  // The rotated files first, oldest first, then the current one.
  for (int i = rotated_files; i >= 1; --i) {
    std::ifstream old(Rotated(path, i));
    if (old) Drain(old);
  }
  struct stat st {};
  ino_t inode = ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  for (;;) {
    Drain(in);
    std::fflush(stdout);
    if (!follow) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    // Rotated: what was written to the old file is read above; go on with the new one.
    if (::stat(path.c_str(), &st) == 0 && st.st_ino != inode) {
      Drain(in);
      in = std::ifstream(path);
      inode = st.st_ino;
    }
  }
}

void AddStopAndRestart(CLI::App* parent, const SessionStore* store, StopArgs* args,
                       std::string* start_config,
                       const std::function<void(CLI::App*)>& add_start_options,
                       std::function<int()> start, const bool* json, int* rc) {
  auto* stop = parent->add_subcommand("stop", "stop a session (default: the current one)");
  stop->add_option("SESSION_ID", args->session);
  stop->add_option("--grace", args->grace_s, "seconds between SIGTERM and SIGKILL (default 30)");
  stop->callback([=] { *rc = store->StopCommand(args->session, args->grace_s, *json); });

  auto* restart = parent->add_subcommand("restart", "stop the current session and start a new one");
  add_start_options(restart);
  restart->add_option("--grace", args->grace_s, "seconds between SIGTERM and SIGKILL (default 30)");
  restart->callback([=] {
    std::optional<SessionMeta> cur = store->Find("");
    if (cur && store->Alive(cur->pid)) {
      if (start_config->empty()) *start_config = cur->config;
      if (int code = store->StopCommand("", args->grace_s, false); code != 0) {
        *rc = code;
        return;
      }
    }
    *rc = start();
  });
}

std::string NewSessionId() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return fmt::format("{}-{}", buf, getpid());
}

std::string LastLines(const fs::path& path, int n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > size_t(n) ? lines.size() - n : 0; i < lines.size(); ++i) {
    out += "  " + lines[i] + "\n";
  }
  return out;
}

void WriteFileAtomically(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp";
  std::ofstream(tmp) << text;
  fs::rename(tmp, path);
}

std::string ExitDescription(int status) {
  return WIFEXITED(status) ? fmt::format("status {}", WEXITSTATUS(status))
                           : fmt::format("signal {}", WTERMSIG(status));
}

}  // namespace cistern::cli
