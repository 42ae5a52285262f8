// `cistern daemon start|stop|status|logs` in a temporary $CISTERN_HOME.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "include/cistern/client.h"
#include "tests/integration/cli_home.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Running and not a zombie waiting for init to reap it.
bool Running(int pid) {
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close = line.rfind(')');
  return close != std::string::npos && line.size() > close + 2 && line[close + 2] != 'Z';
}

class DaemonCliTest : public CliHomeTest {
 protected:
  using Result = CliResult;
};

TEST_F(DaemonCliTest, StartStatusStopWithSessionFiles) {
  Result start = Run("daemon start " + sets_);
  ASSERT_EQ(start.code, 0) << start.out;
  EXPECT_THAT(start.out, HasSubstr("cisternd started"));
  auto sessions = SessionDirs();
  ASSERT_EQ(sessions.size(), 1u);
  std::ifstream meta_in(sessions[0] / "meta.json");
  auto meta = nlohmann::json::parse(meta_in);
  int pid = meta["pid"];
  EXPECT_TRUE(Running(pid));
  EXPECT_TRUE(fs::exists(sessions[0] / "config.yaml"));
  EXPECT_EQ(Run("config validate " + (sessions[0] / "config.yaml").string()).code, 0);

  // Data commands find the daemon through the current session.
  std::string file = home_ + "/v";
  std::ofstream(file) << "value";
  ASSERT_EQ(Run("put k " + file).code, 0);
  auto status = JsonOf("daemon status");
  EXPECT_EQ(status["running"], true);
  EXPECT_EQ(status["healthy"], true);
  EXPECT_EQ(status["pid"], pid);
  EXPECT_EQ(status["objects"], 1);
  EXPECT_EQ(status["tiers"][0]["capacity_bytes"], (64 << 20) - 4096);
  EXPECT_THAT(Run("daemon logs").out, HasSubstr("ready on"));
  std::ifstream meta_again(sessions[0] / "meta.json");
  std::string metrics = nlohmann::json::parse(meta_again)["metrics"];
  EXPECT_THAT(metrics, HasSubstr("127.0.0.1:"));
  uint16_t port = static_cast<uint16_t>(std::stoi(metrics.substr(metrics.rfind(':') + 1)));
  HttpResult scrape = HttpGet(port, "/metrics");
  EXPECT_EQ(scrape.status, 200);
  EXPECT_THAT(scrape.body, HasSubstr("cistern_objects 1"));

  Result stop = Run("daemon stop");
  ASSERT_EQ(stop.code, 0) << stop.out;
  EXPECT_FALSE(Running(pid)) << "cisternd still running";
  Result after = Run("daemon status");
  EXPECT_EQ(after.code, 1);
  EXPECT_THAT(after.out, HasSubstr("not running"));
}

TEST_F(DaemonCliTest, SecondStartIsRefusedAndNamesTheRunningSession) {
  ASSERT_EQ(Run("daemon start " + sets_).code, 0);
  Result again = Run("daemon start " + sets_);
  EXPECT_EQ(again.code, 1);
  EXPECT_THAT(again.out, HasSubstr("already running"));
  EXPECT_EQ(SessionDirs().size(), 1u);
}

TEST_F(DaemonCliTest, StaleSessionAfterKill9IsReplacedAndDataSurvives) {
  ASSERT_EQ(Run("daemon start " + sets_).code, 0);
  std::string file = home_ + "/v";
  std::ofstream(file) << "persisted";
  ASSERT_EQ(Run("put kept " + file).code, 0);
  int pid = JsonOf("daemon status")["pid"];
  ::kill(pid, SIGKILL);
  for (int i = 0; i < 200 && Running(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Result start = Run("daemon start " + sets_);
  ASSERT_EQ(start.code, 0) << start.out;
  EXPECT_THAT(start.out, HasSubstr("replacing stale session"));
  Result get = Run("get kept");
  EXPECT_EQ(get.code, 0);
  EXPECT_EQ(get.out, "persisted");
}

TEST_F(DaemonCliTest, BlockingModeStopsTheDaemonOnSigterm) {
  pid_t cli = ::fork();
  if (cli == 0) {
    ::setenv("CISTERN_HOME", home_.c_str(), 1);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::string bin = BinaryPath("src/cli/cistern");
    std::string sz = "tiers.0.size=64MiB", path = "tiers.0.path=" + arena_;
    ::execl(bin.c_str(), bin.c_str(), "daemon", "start", "--blocking", "--grace", "5", "--set",
            sz.c_str(), "--set", path.c_str(), "--set", "metrics_port=0", nullptr);
    std::_Exit(127);
  }
  int daemon_pid = 0;
  for (int i = 0; i < 500; ++i) {
    auto st = JsonOf("daemon status");
    if (st.value("healthy", false)) {
      daemon_pid = st["pid"];
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_GT(daemon_pid, 0);
  ::kill(cli, SIGTERM);
  int status = 0;
  ::waitpid(cli, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_FALSE(Running(daemon_pid)) << "cisternd outlived the blocking CLI";
}

TEST_F(DaemonCliTest, BadConfigsExitTwoAndLeaveNoDaemon) {
  std::string bad_key = home_ + "/bad.yaml";
  std::ofstream(bad_key) << "tiers:\n  - name: mem\n    size: 64MiB\n    colour: blue\n";
  struct Case {
    std::string args;
    std::string expect;
  } cases[] = {
      {"--config " + bad_key, "tiers[0].colour"},
      {sets_ + "--set tiers.0.size=lots", "tiers.0.size"},
      {sets_ + "--set tiers.0.size=-1GB", "tiers.0.size"},
      {"--set tiers.0.size=100000TiB --set metrics_port=0", "physical memory"},
      {sets_ + "--set socket_path=/tmp/" + std::string(120, 's'), "socket_path"},
      {sets_ + "--set runtime_dir=/dev/null/run", "runtime_dir"},
      {sets_ + "--set log_level=chatty", "log_level"},
      {"--config /no/such/file.yaml", "/no/such/file.yaml"},
  };
  for (const Case& c : cases) {
    Result r = Run("daemon start " + c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out;
    EXPECT_THAT(r.out, HasSubstr(c.expect)) << c.args;
    EXPECT_EQ(Run("daemon status").code, 1) << "a daemon was left behind by: " << c.args;
  }
}

TEST_F(DaemonCliTest, TakenMetricsPortExitsTwoNamingItAndLeavesNoDaemon) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  Result r = Run("daemon start " + sets_ + fmt::format("--set metrics_port={}", port));
  ::close(fd);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr(fmt::format("port {} is already in use", port)));
  EXPECT_EQ(Run("daemon status").code, 1);
  EXPECT_FALSE(fs::exists(arena_)) << "the arena was created before the port was checked";
}

}  // namespace
}  // namespace cistern::testing
