#include "tests/integration/daemon_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>
#include <utility>

#include "fmt/format.h"

namespace cistern::testing {

HttpResult HttpGet(uint16_t port, const std::string& path) {
  HttpResult r;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return r;
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return r;
  }
  std::string resp;
  char buf[16384];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) resp.append(buf, n);
  ::close(fd);
  if (resp.rfind("HTTP/1.1 ", 0) == 0) r.status = std::atoi(resp.c_str() + 9);
  size_t at = resp.find("\r\n\r\n");
  if (at != std::string::npos) r.body = resp.substr(at + 4);
  return r;
}

// The value of the sample written exactly as `series` (name and labels, in
// the order the daemon writes them), or -1 when there is none.

CliResult RunCli(const std::string& args, const std::string& env) {
  std::string cmd = env + BinaryPath("src/cli/cistern") + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint16_t FreeTcpPort() {
  // Below the kernel's ephemeral range (32768-60999 by default), so that no
  // outgoing connection takes the port between this check and the daemon's
  // bind; random, so that parallel tests rarely try the same one.
  static std::atomic<uint32_t> calls{0};
  std::mt19937 rng(static_cast<uint32_t>(::getpid()) * 7919u + calls.fetch_add(1) * 104729u);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    uint16_t port = static_cast<uint16_t>(20000 + rng() % 12000);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    sa.sin_port = htons(port);
    bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    ::close(fd);
    if (free) return port;
  }
  return 0;
}

namespace {

// In a forked child before exec: dies with the test process. A test that
// aborts (an assertion, a sanitizer report) otherwise leaves its daemons and
// helper processes running, and CI's next steps share the machine with them.
// Called from the thread that forks; gtest forks from its main thread.
void DieWithParent(pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) std::_Exit(125);  // it died before the prctl
}

}  // namespace

std::string BinaryPath(const std::string& name) {
  return std::string(CISTERN_BUILD_DIR) + "/" + name;
}

ChildProcess ChildProcess::Spawn(std::vector<std::string> argv, const std::string& stderr_path) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    std::perror("pipe2");
    std::abort();
  }
  ChildProcess c;
  const pid_t parent = ::getpid();
  c.pid_ = ::fork();
  if (c.pid_ == 0) {
    DieWithParent(parent);
    ::dup2(fds[1], 1);
    if (!stderr_path.empty()) {
      int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (err >= 0) ::dup2(err, 2);
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::_Exit(127);
  }
  ::close(fds[1]);
  c.out_ = ::fdopen(fds[0], "r");
  return c;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), out_(std::exchange(other.out_, nullptr)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    this->~ChildProcess();
    pid_ = std::exchange(other.pid_, -1);
    out_ = std::exchange(other.out_, nullptr);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    Wait();
  }
  if (out_) std::fclose(out_);
  out_ = nullptr;
}

std::string ChildProcess::ReadLine() {
  char buf[4096];
  if (!out_ || !std::fgets(buf, sizeof buf, out_)) return "";
  std::string s(buf);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

int ChildProcess::ReadByte() { return out_ ? std::getc(out_) : -1; }

int ChildProcess::Wait() {
  int status = 0;
  if (pid_ > 0) ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Daemon::Daemon(DaemonSpec spec) : netns_(spec.netns) {
  char tmpl[] = "/tmp/cistern-test-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  socket_path_ = dir_ + "/cisternd.sock";
  config_path_ = dir_ + "/cisternd.yaml";
  log_path_ = dir_ + "/cisternd.log";
  arena_path_ = fmt::format("/dev/shm/cistern-test-{}-{}.arena", getpid(),
                            std::filesystem::path(dir_).filename().string());
  // Daemons of parallel tests must not share the default metrics port (9464).
  std::string metrics_port =
      spec.extra_yaml.find("metrics_port:") == std::string::npos ? "metrics_port: 0\n" : "";
  std::ofstream(config_path_) << fmt::format(
      "runtime_dir: {}\nsocket_path: {}\nlog_level: debug\ntiers:\n  - name: mem\n"
      "    path: {}\n    size: {}\n{}{}",
      dir_, socket_path_, arena_path_, spec.tier_bytes, metrics_port, spec.extra_yaml);
}

Daemon::~Daemon() {
  if (pid_ > 0) {
    Kill(SIGKILL);
    Wait();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  RemoveArena(arena_path_);
}

uint16_t Daemon::metrics_port() const {
  std::smatch m;
  static const std::regex re("metrics on http://127\\.0\\.0\\.1:(\\d+)/metrics");
  std::string log = Log();
  if (size_t last = log.rfind("metrics on http://"); last != std::string::npos) log.erase(0, last);
  if (!std::regex_search(log, m, re)) return 0;
  return static_cast<uint16_t>(std::stoi(m[1]));
}

void RemoveArena(const std::string& arena_path) {
  std::error_code ec;
  std::filesystem::remove(arena_path, ec);
  std::string table = arena_path;
  if (table.ends_with(".arena")) table.resize(table.size() - 6);
  for (const char* suffix : {".leases", ".leases.index", ".leases.fast"}) {
    std::filesystem::remove(table + suffix, ec);
  }
}

pid_t Daemon::Spawn(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinaryPath("src/daemon/cisternd"), "--config", config_path_};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    DieWithParent(parent);
    int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    if (!netns_.empty()) {
      int ns = ::open(("/run/netns/" + netns_).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "cannot enter network namespace '%s': %s\n", netns_.c_str(),
                     std::strerror(errno));
        std::_Exit(126);
      }
    }
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    std::_Exit(127);
  }
  return pid;
}

bool Daemon::Start(const std::vector<std::string>& args, std::string* error) {
  pid_ = Spawn(args);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (error) *error = "cisternd exited during start:\n" + Log();
      return false;
    }
    // Any answer but Unavailable means it is serving (a token or uid check
    // may refuse this probe).
    if (Connect().status().code() != absl::StatusCode::kUnavailable) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (error) *error = "cisternd did not answer within 20 s:\n" + Log();
  return false;
}

int Daemon::RunToExit(const std::vector<std::string>& args) {
  pid_ = Spawn(args);
  return Wait();
}

bool Daemon::Restart(std::string* error) {
  Kill(SIGKILL);
  Wait();
  return Start({}, error);
}

void Daemon::Kill(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

int Daemon::Wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

absl::StatusOr<std::unique_ptr<Client>> Daemon::Connect(const std::string& token,
                                                        bool fast_path) const {
  ConnectOptions o;
  o.socket_path = socket_path_;
  o.token = token;
  o.fast_path = fast_path;
  return Client::Connect(o);
}

std::string Daemon::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
uint64_t KeySeed(std::string_view key) {
  uint64_t h = 1469598103934665603ull;
  for (char c : key) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h;
}
}  // namespace

void FillForKey(std::string_view key, std::byte* out, size_t n) {
  uint64_t x = KeySeed(key);
  for (size_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out + i, &x, std::min<size_t>(8, n - i));
  }
}

bool MatchesKey(std::string_view key, const std::byte* data, size_t n) {
  std::vector<std::byte> expect(n);
  FillForKey(key, expect.data(), n);
  return std::memcmp(expect.data(), data, n) == 0;
}

bool FlipPayloadByte(const std::string& arena_path, char fill) {
  int fd = ::open(arena_path.c_str(), O_RDWR);
  if (fd < 0) return false;
  std::string data(1 << 20, '\0');
  ssize_t n = ::pread(fd, data.data(), data.size(), 0);
  size_t at = n > 0 ? data.find(std::string(100, fill)) : std::string::npos;
  char flipped = static_cast<char>(fill + 1);
  bool ok = at != std::string::npos && at + 50 < static_cast<size_t>(n) &&
            ::pwrite(fd, &flipped, 1, static_cast<off_t>(at + 50)) == 1;
  ::close(fd);
  return ok;
}

}  // namespace cistern::testing
