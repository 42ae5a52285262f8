// Runs a real cisternd for a test: a temporary directory with its config,
// socket and log, a unique arena file in /dev/shm, and cleanup on destruction
// (the daemon is killed and every file removed), even when the test fails.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "include/cistern/client.h"

namespace cistern::testing {

struct DaemonSpec {
  uint64_t tier_bytes = 64 << 20;
  std::string extra_yaml;  // appended to the generated config
  // Run cisternd in this network namespace (/run/netns/NAME, as `ip netns
  // add` makes it): a simulated host (scripts/cluster-sim). Its Unix socket
  // is still reached from here.
  std::string netns;
};

class Daemon {
 public:
  explicit Daemon(DaemonSpec spec = {});
  ~Daemon();

  // Starts cisternd with `args` and waits until it answers hello. Returns false
  // (with the log in `error`) if it exits or does not answer within 20 s.
  bool Start(const std::vector<std::string>& args = {}, std::string* error = nullptr);
  // Starts cisternd and waits for it to exit; returns its exit code.
  int RunToExit(const std::vector<std::string>& args = {});
  void Kill(int sig = SIGKILL);
  // Waits for the daemon to exit; returns the exit code, or 128+signal.
  int Wait();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // kill -9, then start again over the same directory, arena and state.
  bool Restart(std::string* error = nullptr);

  // fast_path false: every get is a request (ConnectOptions::fast_path).
  absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& token = "",
                                                  bool fast_path = true) const;
  const std::string& socket_path() const { return socket_path_; }
  const std::string& config_path() const { return config_path_; }
  const std::string& arena_path() const { return arena_path_; }
  const std::string& dir() const { return dir_; }
  // The registry database: state_dir defaults to <runtime_dir>/state.
  std::string registry_path() const { return dir_ + "/state/registry.db"; }
  std::string Log() const;
  // The port it logged last for metrics_port: 0 (the default here); 0 if none.
  uint16_t metrics_port() const;

 private:
  pid_t Spawn(const std::vector<std::string>& args);
  std::string netns_;
  std::string dir_, socket_path_, config_path_, arena_path_, log_path_;
  pid_t pid_ = -1;
};

struct HttpResult {
  int status = 0;  // 0 when nothing answered
  std::string body;
};
// GET http://127.0.0.1:port/path (HTTP/1.0, 10 s timeout).
HttpResult HttpGet(uint16_t port, const std::string& path);

// Runs the `cistern` binary with `args` through the shell (so args may hold
// redirections), with `env` (e.g. "CISTERN_HOME=/tmp/x ") before it.
struct CliResult {
  int code;
  std::string out;  // stdout and stderr together
};
CliResult RunCli(const std::string& args, const std::string& env = "");

std::string ReadFile(const std::string& path);

// Removes an arena file and the shared lease table the daemon keeps beside it
// (the arena's path with ".leases" for ".arena"; see lease_table_path).
void RemoveArena(const std::string& arena_path);

// Flips one payload byte of the object filled with `fill` bytes (100 of them
// in a row, within the first MiB of the arena file), as a stray write would.
// False if no such bytes are there.
bool FlipPayloadByte(const std::string& arena_path, char fill);

// Polls `pred` for up to 20 s; a condition wait, not a timing assertion.
template <typename F>
bool Eventually(F pred) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// A TCP port free right now outside the ephemeral range (0 if none found):
// for a daemon's cluster.advertise, where its peer transport listens.
uint16_t FreeTcpPort();

// Path of a binary built beside the tests (cisternd, cistern_test_client).
std::string BinaryPath(const std::string& name);

// A child process running argv[0] (a path) with its stdout on a pipe and, when
// `stderr_path` is set, its stderr appended to that file. Move-only; killed
// (SIGKILL) and reaped on destruction unless Wait() reaped it already.
class ChildProcess {
 public:
  static ChildProcess Spawn(std::vector<std::string> argv, const std::string& stderr_path = "");
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // The next line of its stdout without the newline; "" at the end.
  std::string ReadLine();
  // The next byte of its stdout; -1 at the end.
  int ReadByte();
  // Waits for it to exit; returns the exit code, or 128+signal.
  int Wait();

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
};

// Deterministic content for a key: every byte is a function of the key and
// its position, so a reader can verify a whole object from its key alone.
void FillForKey(std::string_view key, std::byte* out, size_t n);
bool MatchesKey(std::string_view key, const std::byte* data, size_t n);

}  // namespace cistern::testing
