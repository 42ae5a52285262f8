// What the benchmarks that start their own cisternd share: the cleanup list
// (every process and file they make is undone on exit and on SIGINT/SIGTERM),
// a cisternd from a generated config (class Daemon), latency summaries, the
// --json helpers and a description of the machine. Header-only; each
// benchmark binary includes it once.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "include/cistern/client.h"

namespace cistern::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
inline double Nanos(Clock::duration d) {
  return std::chrono::duration<double, std::nano>(d).count();
}

// Keeps the compiler from dropping a copy whose result is never read.
inline void Escape(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

[[noreturn]] inline void Die(const std::string& msg);

// ---------------------------------------------------------------- cleanup ----
// Everything to undo on exit, kept in plain arrays so the signal handler can
// use them (kill and unlink are async-signal-safe).
struct CleanupList {
  static constexpr int kMax = 64;
  pid_t pids[kMax] = {};
  char paths[kMax][256] = {};  // files, then directories (rmdir'd in order)
  std::atomic<int> npids{0}, npaths{0};
};
inline CleanupList g_cleanup;

inline void AddCleanupPath(const std::string& p) {
  int i = g_cleanup.npaths.fetch_add(1);
  if (i >= CleanupList::kMax || p.size() >= 256) Die("cleanup list overflow");
  std::memcpy(g_cleanup.paths[i], p.c_str(), p.size() + 1);
}
inline void AddCleanupPid(pid_t pid) {
  for (int i = 0; i < g_cleanup.npids.load(); ++i) {
    if (g_cleanup.pids[i] == 0) {
      g_cleanup.pids[i] = pid;
      return;
    }
  }
  int i = g_cleanup.npids.fetch_add(1);
  if (i >= CleanupList::kMax) Die("cleanup list overflow");
  g_cleanup.pids[i] = pid;
}
inline void DropCleanupPid(pid_t pid) {
  for (int i = 0; i < g_cleanup.npids.load(); ++i) {
    if (g_cleanup.pids[i] == pid) g_cleanup.pids[i] = 0;
  }
}
inline void CleanupNow() {
  for (int i = 0; i < g_cleanup.npids.load(); ++i) {
    if (g_cleanup.pids[i] > 0) {
      ::kill(g_cleanup.pids[i], SIGKILL);
      ::waitpid(g_cleanup.pids[i], nullptr, 0);
      g_cleanup.pids[i] = 0;
    }
  }
  for (int i = 0; i < g_cleanup.npaths.load(); ++i) {
    if (::unlink(g_cleanup.paths[i]) != 0) ::rmdir(g_cleanup.paths[i]);
  }
}
inline void OnSignal(int sig) {
  CleanupNow();
  ::_exit(128 + sig);
}

[[noreturn]] inline void Die(const std::string& msg) {
  std::fprintf(stderr, "cistern_store_bench: %s\n", msg.c_str());
  CleanupNow();
  std::exit(1);
}

// --------------------------------------------------------------- process ----

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Forks and execs `argv` with stdout and stderr appended to `log`.
inline pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = ::fork();
  if (pid < 0) Die(fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    std::_Exit(127);
  }
  AddCleanupPid(pid);
  return pid;
}

inline bool Exited(pid_t pid) {
  int status;
  return ::waitpid(pid, &status, WNOHANG) == pid;
}

// SIGTERM, then SIGKILL if it has not exited within 10 s.
inline void Stop(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    if (Exited(pid)) {
      DropCleanupPid(pid);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  DropCleanupPid(pid);
}

// A /proc/<pid>/status field in bytes (the kernel reports kB).
// Processes that spin (nice 0) until StopHogs: one per CPU makes a busy host.
inline std::vector<pid_t> StartHogs(int n) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    if (pid < 0) Die(fmt::format("fork: {}", std::strerror(errno)));
    if (pid == 0) {
      ::prctl(PR_SET_NAME, "bench-hog");
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      volatile uint64_t x = 0;
      for (;;) x = x + 1;
    }
    AddCleanupPid(pid);
    pids.push_back(pid);
  }
  return pids;
}
inline void StopHogs(const std::vector<pid_t>& pids) {
  for (pid_t h : pids) {
    ::kill(h, SIGKILL);
    ::waitpid(h, nullptr, 0);
    DropCleanupPid(h);
  }
}

inline uint64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return std::strtoull(line.c_str() + field.size() + 1, nullptr, 10) * 1024;
    }
  }
  Die(fmt::format("no {} in /proc/{}/status", field, pid));
}

inline std::string MakeTempDir() {
  char tmpl[] = "/tmp/cistern-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) Die(fmt::format("mkdtemp: {}", std::strerror(errno)));
  return tmpl;
}

// ---------------------------------------------------------------- cisternd ----

// A cisternd of its own: config, socket and log in a temporary directory, one
// tier `tier_bytes` in `arena_dir`. `tier_yaml` is added to the tier's entry,
// `top_yaml` (top-level keys) to the config, and then $CISTERN_BENCH_DAEMON_YAML.
class Daemon {
 public:
  Daemon(std::string binary, std::string name, uint64_t tier_bytes,
         const std::string& arena_dir = "/dev/shm", const std::string& tier_yaml = "",
         const std::string& top_yaml = "")
      : binary_(std::move(binary)), tier_bytes_(tier_bytes) {
    dir_ = MakeTempDir();
    socket_path_ = dir_ + "/cisternd.sock";
    config_path_ = dir_ + "/cisternd.yaml";
    log_path_ = dir_ + "/cisternd.log";
    arena_path_ = fmt::format("{}/cistern-bench-{}{}.arena", arena_dir, getpid(), name);
    lease_table_path_ = fmt::format("/dev/shm/cistern-bench-{}{}.leases", getpid(), name);
    for (const auto& p :
         {arena_path_, lease_table_path_, lease_table_path_ + ".index", lease_table_path_ + ".fast",
          socket_path_, config_path_, log_path_, dir_}) {
      AddCleanupPath(p);
    }
    std::filesystem::remove(arena_path_);
    std::ofstream(config_path_) << fmt::format(
        "runtime_dir: {}\nsocket_path: {}\nlog_level: info\ntiers:\n  - name: mem\n"
        "    path: {}\n    size: {}\n{}metrics_port: 0\n{}{}",
        dir_, socket_path_, arena_path_, tier_bytes_, tier_yaml, top_yaml,
        getenv("CISTERN_BENCH_DAEMON_YAML") ? getenv("CISTERN_BENCH_DAEMON_YAML") : "");
  }
  ~Daemon() {
    Stop(pid_);
    std::error_code ec;
    std::filesystem::remove(arena_path_, ec);
    for (const char* suffix : {"", ".index", ".fast"}) {
      std::filesystem::remove(lease_table_path_ + suffix, ec);
    }
    std::filesystem::remove_all(dir_, ec);
  }

  // Starts cisternd and waits until it logs "ready" and accepts a client.
  void Start() {
    pid_ = Spawn({binary_, "--config", config_path_}, log_path_);
    auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      if (Exited(pid_)) {
        DropCleanupPid(pid_);
        pid_ = -1;
        Die("cisternd exited during start:\n" + ReadFile(log_path_));
      }
      if (ReadFile(log_path_).find("ready") != std::string::npos && Connect().ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Die("cisternd did not become ready within 30 s:\n" + ReadFile(log_path_));
  }

  // Waits until the daemon logs that its arena is pre-faulted (or says why
  // it stopped); the seconds the walk took by its own account, or -1.
  double WaitPrefaulted() const {
    auto deadline = Clock::now() + std::chrono::seconds(120);
    while (Clock::now() < deadline) {
      std::string log = ReadFile(log_path_);
      size_t at = log.find("pre-faulted in ");
      if (at != std::string::npos) return std::strtod(log.c_str() + at + 15, nullptr);
      if (log.find("pre-faulting tier") != std::string::npos) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Die("cisternd did not finish pre-faulting its arena within 120 s");
  }
  const std::string& log_path() const { return log_path_; }

  // fast_path false: every get is a round trip (ConnectOptions::fast_path);
  // reserve false: every put over 64 KiB is create + seal
  // (ConnectOptions::reserve_write_space).
  absl::StatusOr<std::unique_ptr<Client>> Connect(bool fast_path = true,
                                                  bool reserve = true) const {
    ConnectOptions o;
    o.socket_path = socket_path_;
    o.client_name = "cistern_store_bench";
    o.fast_path = fast_path;
    o.reserve_write_space = reserve;
    return Client::Connect(o);
  }
  std::unique_ptr<Client> MustConnect(bool fast_path = true, bool reserve = true) const {
    auto c = Connect(fast_path, reserve);
    if (!c.ok()) Die(fmt::format("connect to cisternd: {}", c.status().ToString()));
    return std::move(*c);
  }

  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  const std::string& arena_path() const { return arena_path_; }
  uint64_t tier_bytes() const { return tier_bytes_; }

 private:
  std::string binary_;
  uint64_t tier_bytes_;
  std::string dir_, socket_path_, config_path_, log_path_, arena_path_, lease_table_path_;
  pid_t pid_ = -1;
};

// ------------------------------------------------------------ statistics ----

struct LatencyStats {
  double mean_ns = 0, p50_ns = 0, p99_ns = 0, min_ns = 0;
  size_t n = 0;
};

inline LatencyStats Summarize(std::vector<double> ns) {
  LatencyStats s;
  s.n = ns.size();
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  s.mean_ns = std::accumulate(ns.begin(), ns.end(), 0.0) / ns.size();
  s.p50_ns = ns[ns.size() / 2];
  s.p99_ns = ns[std::min(ns.size() - 1, ns.size() * 99 / 100)];
  s.min_ns = ns.front();
  return s;
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Fills with a cheap pseudo-random pattern; also faults the pages in.
template <typename T>
inline T Must(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(fmt::format("{}: {}", what, v.status().ToString()));
  return std::move(*v);
}
inline void Must(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Die(fmt::format("{}: {}", what, s.ToString()));
}

// ------------------------------------------------------------------- json ----
// The --json report: nlohmann's ordered JSON, fields in the order they are set.

using Json = nlohmann::ordered_json;

// Six significant digits, as the printed tables; NaN and infinity as null.
inline Json Number(double v) {
  return std::isfinite(v) ? Json(std::stod(fmt::format("{:.6g}", v))) : Json();
}

inline Json Numbers(const std::vector<double>& v) {
  Json out = Json::array();
  for (double x : v) out.push_back(Number(x));
  return out;
}

class JsonObject {
 public:
  JsonObject& Num(const std::string& k, double v) { return Raw(k, Number(v)); }
  JsonObject& Int(const std::string& k, uint64_t v) { return Raw(k, v); }
  JsonObject& Str(const std::string& k, const std::string& v) { return Raw(k, v); }
  JsonObject& Bool(const std::string& k, bool v) { return Raw(k, v); }
  JsonObject& Raw(const std::string& k, Json v) {
    j_[k] = std::move(v);
    return *this;
  }
  const Json& Build() const { return j_; }

 private:
  Json j_ = Json::object();
};

// ---------------------------------------------------------------- machine ----

inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

inline std::string LoadAvg() {
  std::string s = ReadFile("/proc/loadavg");
  std::istringstream in(s);
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// SIGINT and SIGTERM clean up (CleanupNow) and exit; SIGPIPE is ignored.
inline void InstallCleanupHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

// "kernel <sysname> <release>", as the JSON reports record it.
inline std::string KernelName() {
  utsname u{};
  ::uname(&u);
  return fmt::format("{} {}", u.sysname, u.release);
}

// The "machine" object of a JSON report.
inline Json MachineJson(const std::string& load_start, const std::string& load_end) {
  return JsonObject()
      .Int("cpus_online", ::sysconf(_SC_NPROCESSORS_ONLN))
      .Str("cpu_model", CpuModel())
      .Str("kernel", KernelName())
      .Str("load_average_start", load_start)
      .Str("load_average_end", load_end)
      .Build();
}

// Writes `j` to `path` (Die on failure) and says so.
inline void WriteJson(const std::string& path, const Json& j) {
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  if (!f) Die("cannot write " + path);
  fmt::print("wrote {}\n", path);
}

}  // namespace cistern::bench
