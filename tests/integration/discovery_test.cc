// How a client finds cisternd (DiscoverSocket): an explicit address, else
// $CISTERN_ADDRESS, else the live `cistern daemon start` session of this
// host, else the hand-started daemon's default socket. The C++ client and
// the CLI are checked here; Python's cistern.connect() in
// python/tests/test_discovery.py.
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

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

// Sets an environment variable for the test's lifetime.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A temporary $CISTERN_HOME with a daemon that `cistern daemon start` runs.
class DiscoveryTest : public CliHomeTest {
 protected:
  // The CLI with this home and no address variables unless `env` sets them.
  CliResult Cli(const std::string& args, const std::string& env = "") {
    return Run(args, "CISTERN_SOCKET= " + env + " ");
  }
  // Starts the session daemon; returns its socket (from meta.json).
  std::string StartSession() {
    CliResult r = Cli("--json daemon start " + sets_);
    EXPECT_EQ(r.code, 0) << r.out;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("socket", "") : "";
  }
  // Client::Connect with default options, in this process's environment.
  absl::StatusOr<std::string> ConnectedSocket(const std::string& address = "") {
    ConnectOptions o;
    o.socket_path = address;
    auto c = Client::Connect(o);
    if (!c.ok()) return c.status();
    auto st = (*c)->Status();
    if (!st.ok()) return st.status();
    return st->socket_path();
  }
};

// Issue 10: a C++ program calling Client::Connect with default options looked
// in $CISTERN_HOME/run and did not find the daemon `cistern daemon start`
// started (its socket is under hosts/<host_id>/run).
TEST_F(DiscoveryTest, DefaultConnectFindsTheDaemonTheCliStarted) {
  std::string socket = StartSession();
  ASSERT_FALSE(socket.empty());
  EXPECT_THAT(socket, HasSubstr(home_ + "/hosts/"));
  ScopedEnv home("CISTERN_HOME", home_);
  ScopedEnv address("CISTERN_ADDRESS", "");
  ScopedEnv legacy("CISTERN_SOCKET", "");
  EXPECT_EQ(DiscoverSocket(), socket);
  auto connected = ConnectedSocket();
  ASSERT_TRUE(connected.ok()) << connected.status();
  EXPECT_EQ(*connected, socket);

  // The CLI finds the same daemon: a put through the C++ client is seen.
  ConnectOptions o;
  auto c = Client::Connect(o);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Put("found", "bytes").ok());
  CliResult ls = Cli("ls");
  EXPECT_EQ(ls.code, 0) << ls.out;
  EXPECT_THAT(ls.out, HasSubstr("found"));
}

// A stopped session is not followed: discovery falls back to the default
// socket, and the error names it.
TEST_F(DiscoveryTest, AStoppedSessionFallsBackToTheDefaultSocket) {
  ASSERT_FALSE(StartSession().empty());
  ASSERT_EQ(Cli("daemon stop --grace 5").code, 0);
  ScopedEnv home("CISTERN_HOME", home_);
  ScopedEnv address("CISTERN_ADDRESS", "");
  ScopedEnv legacy("CISTERN_SOCKET", "");
  EXPECT_EQ(DiscoverSocket(), home_ + "/run/cisternd.sock");
  EXPECT_EQ(DefaultSocketPath(), home_ + "/run/cisternd.sock");
  auto connected = ConnectedSocket();
  ASSERT_FALSE(connected.ok());
  EXPECT_THAT(connected.status().message(), HasSubstr(home_ + "/run/cisternd.sock"));
  CliResult ls = Cli("ls");
  EXPECT_EQ(ls.code, 1);
  EXPECT_THAT(ls.out, HasSubstr(home_ + "/run/cisternd.sock"));
}

// $CISTERN_ADDRESS wins over the session, and an explicit address over both,
// for the C++ client and the CLI alike.
TEST_F(DiscoveryTest, AddressVariableAndExplicitAddressWinOverTheSession) {
  std::string session = StartSession();
  ASSERT_FALSE(session.empty());
  Daemon other;
  std::string err;
  ASSERT_TRUE(other.Start({}, &err)) << err;
  auto oc = other.Connect();
  ASSERT_TRUE(oc.ok());
  ASSERT_TRUE((*oc)->Put("on-other", "x").ok());

  ScopedEnv home("CISTERN_HOME", home_);
  ScopedEnv legacy("CISTERN_SOCKET", "");
  {
    ScopedEnv address("CISTERN_ADDRESS", other.socket_path());
    auto connected = ConnectedSocket();
    ASSERT_TRUE(connected.ok()) << connected.status();
    EXPECT_EQ(*connected, other.socket_path());
    // Explicit beats the variable.
    auto explicit_session = ConnectedSocket(session);
    ASSERT_TRUE(explicit_session.ok()) << explicit_session.status();
    EXPECT_EQ(*explicit_session, session);
  }
  CliResult by_var = Cli("ls", "CISTERN_ADDRESS=" + other.socket_path());
  EXPECT_EQ(by_var.code, 0) << by_var.out;
  EXPECT_THAT(by_var.out, HasSubstr("on-other"));
  CliResult by_flag = Cli("ls --address " + other.socket_path());
  EXPECT_EQ(by_flag.code, 0) << by_flag.out;
  EXPECT_THAT(by_flag.out, HasSubstr("on-other"));
  CliResult session_ls = Cli("ls");
  EXPECT_EQ(session_ls.code, 0) << session_ls.out;
  EXPECT_THAT(session_ls.out, ::testing::Not(HasSubstr("on-other")));
  // The old variable name still works, below $CISTERN_ADDRESS.
  {
    ScopedEnv address("CISTERN_ADDRESS", "");
    ScopedEnv old_name("CISTERN_SOCKET", other.socket_path());
    EXPECT_EQ(DiscoverSocket(), other.socket_path());
  }
}

}  // namespace
}  // namespace cistern::testing
