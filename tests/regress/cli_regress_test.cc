// Regression tests for the config loader, the CLI and safetensors (issue 9,
// items 6 to 11): the real `cistern` and `cisternd` binaries in a temporary
// $CISTERN_HOME. Commands that once looped forever run under `timeout`, so a
// regression fails the test instead of hanging it.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "include/cistern/client.h"
#include "tests/integration/cli_home.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/raw_connection.h"

namespace cistern::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// A guard against the loops these tests pin down (normal runs take well under
// a second); killed runs exit 137.
constexpr const char* kGuard = "timeout -s KILL 60 ";

// Runs `cmd` through the shell; stdout and stderr together.
CliResult Shell(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A temporary $CISTERN_HOME with an arena path of its own; a daemon started in
// it is stopped at the end.
class CliRegressTest : public CliHomeTest {
 protected:
  CliResult Run(const std::string& args, const std::string& env = "") {
    return CliHomeTest::Run(args, env + kGuard);
  }
  std::string Path(const std::string& name) { return home_ + "/" + name; }
  // `cisternd --config file`, confined to the home and the test's arena in
  // case it does start.
  CliResult Cisternd(const std::string& file) {
    return Shell(fmt::format(
        "{}{} --config {} --set runtime_dir={}/run --set metrics_port=0 --set tiers.0.name=mem "
        "--set tiers.0.size=64MiB --set tiers.0.path={}",
        kGuard, BinaryPath("src/daemon/cisternd"), file, home_, arena_));
  }
  // The only session directory under the home.
  fs::path Session() {
    std::vector<fs::path> out = SessionDirs();
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? fs::path() : out[0];
  }
};

// Item 6: a one-byte config file `,` made `cistern config validate` and
// `cisternd --config` loop and grow without bound (yaml-cpp 0.7).
TEST_F(CliRegressTest, FlowCommaConfigExitsTwoWithLineAndColumn) {
  for (const std::string& text : {std::string(","), std::string(",*x"), std::string("[a],"),
                                  std::string("token: x\n---\n,")}) {
    std::string file = Path("comma.yaml");
    Write(file, text);
    CliResult v = Run("config validate " + file);
    EXPECT_EQ(v.code, 2) << text << "\n" << v.out;
    EXPECT_THAT(v.out, HasSubstr("YAML syntax error at line")) << text;
    EXPECT_THAT(v.out, HasSubstr("unexpected ','")) << text;
    CliResult d = Cisternd(file);
    EXPECT_EQ(d.code, 2) << text << "\n" << d.out;
    EXPECT_THAT(d.out, HasSubstr("unexpected ','")) << text;
  }
}

// Item 6: `--set allowed_uids=,1000` was read as null and cleared the list.
TEST_F(CliRegressTest, FlowCommaOverrideExitsTwo) {
  std::string file = Path("ok.yaml");
  Write(file, "allowed_uids: [0]\n");
  for (const char* set : {"allowed_uids=,1000", "tiers=,*x"}) {
    CliResult v = Run("config validate " + file + " --set '" + set + "'");
    EXPECT_EQ(v.code, 2) << set << "\n" << v.out;
    EXPECT_THAT(v.out, HasSubstr("not valid YAML at line 1, column 1")) << set;
    CliResult show = Run("config show --effective --config " + file + " --set '" + set + "'");
    EXPECT_EQ(show.code, 2) << set << "\n" << show.out;
    CliResult start = Run("daemon start " + sets_ + "--set '" + set + "'");
    EXPECT_EQ(start.code, 2) << set << "\n" << start.out;
  }
}

// Item 8: configs that `config validate` accepted broke the daemon: an
// overflowing hello_timeout_ms, a lease timeout above the streams' 7 days, a
// token with an unterminated quote, a token that is not UTF-8. Validate and
// the daemon now reject each the same way.
TEST_F(CliRegressTest, ConfigsThatBrokeTheDaemonFailValidateAndTheDaemonAlike) {
  struct Case {
    std::string yaml;
    std::string expect;
  } cases[] = {
      {"hello_timeout_ms: 10000000000000\n", "hello_timeout_ms 10000000000000 must be 1..3600000"},
      {"streams:\n  lease_timeout_ms: 720h\n", "streams.lease_timeout_ms 2592000000 must be"},
      {"token: \"abc\n",
       "line 1, column 8: the double-quoted string that starts here has no "
       "closing"},
      {"token: ab\xff\n", "line 1, column 10: byte 0xff is not UTF-8"},
  };
  for (const Case& c : cases) {
    std::string file = Path("bad.yaml");
    Write(file, c.yaml);
    CliResult v = Run("config validate " + file);
    EXPECT_EQ(v.code, 2) << c.yaml << v.out;
    EXPECT_THAT(v.out, HasSubstr(c.expect)) << c.yaml;
    CliResult d = Cisternd(file);
    EXPECT_EQ(d.code, 2) << c.yaml << d.out;
    EXPECT_THAT(d.out, HasSubstr(c.expect)) << c.yaml;
    CliResult start = Run("daemon start --config " + file + " " + sets_);
    EXPECT_EQ(start.code, 2) << c.yaml << start.out;
    EXPECT_THAT(start.out, HasSubstr(c.expect)) << c.yaml;
  }
}

// Item 7: `cistern load` segfaulted on a 200 KB header nesting 100,000 '['
// (a stack overflow formatting the error).
TEST_F(CliRegressTest, LoadOfADeeplyNestedHeaderExitsTwo) {
  std::string header = "{\"a\":" + std::string(100'000, '[') + std::string(100'000, ']') + "}";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(header.size() >> (8 * i));
  std::string file = Path("deep.safetensors");
  Write(file, bytes + header);
  CliResult r = Run("load " + file + " --key k");
  EXPECT_EQ(r.code, 2) << r.out.substr(0, 2000);
  EXPECT_THAT(r.out, HasSubstr("nests arrays and objects more than 128 deep"));
  EXPECT_LT(r.out.size(), 400u);
}

// Item 9: with `token:` in the config and no CISTERN_TOKEN, `daemon start`
// waited out its timeout ("did not become ready"), and `daemon status
// --token X` ignored --token.
TEST_F(CliRegressTest, DaemonCommandsUseTheConfiguredTokenAndHonourTokenFlag) {
  CliResult start = Run("daemon start --timeout 30 " + sets_ + "--set token=s3cret");
  ASSERT_EQ(start.code, 0) << start.out;
  EXPECT_THAT(start.out, HasSubstr("cisternd started"));
  CliResult status = Run("daemon status");  // the session's own config has the token
  EXPECT_EQ(status.code, 0) << status.out;
  EXPECT_THAT(status.out, HasSubstr("healthy"));
  CliResult wrong = Run("daemon status --token nope");
  EXPECT_EQ(wrong.code, 1) << wrong.out;
  EXPECT_THAT(wrong.out, HasSubstr("wrong token"));
  CliResult wrong_env = Run("daemon status", "CISTERN_TOKEN=nope ");
  EXPECT_THAT(wrong_env.out, HasSubstr("wrong token"));
  EXPECT_EQ(Run("daemon status --token s3cret").code, 0);
  // The data commands too.
  EXPECT_THAT(Run("ls").out, HasSubstr("a token is required"));
  EXPECT_EQ(Run("ls --token s3cret").code, 0);
}

// Item 9: a daemon that refuses the readiness probe (here: this uid is not
// allowed) made `daemon start` wait out its timeout; it fails at once with
// the reason and leaves no daemon behind.
TEST_F(CliRegressTest, DaemonStartFailsAtOnceWhenTheProbeIsRefused) {
  uint32_t other = geteuid() == 4242 ? 4243 : 4242;
  CliResult start =
      Run(fmt::format("daemon start --timeout 600 {}--set allowed_uids=[{}]", sets_, other));
  EXPECT_EQ(start.code, 1) << start.out;
  EXPECT_THAT(start.out, HasSubstr("refused the readiness probe"));
  EXPECT_THAT(start.out, HasSubstr("allowed_uids"));
  EXPECT_THAT(start.out, Not(HasSubstr("did not become ready")));
  EXPECT_EQ(Run("daemon status").code, 1) << "a daemon was left behind";
}

// Item 10: `daemon start` pointed the daemon's stdout at logs/stdout.log and
// nothing ever rotated it. The log is now the daemon's log_file there, rotated
// at log_max_bytes, keeping log_max_files; `daemon logs` prints them all.
TEST_F(CliRegressTest, DaemonStartRotatesTheSessionLog) {
  CliResult start = Run("daemon start " + sets_ +
                        "--set log_level=debug --set log_max_bytes=64KiB --set log_max_files=2");
  ASSERT_EQ(start.code, 0) << start.out;
  fs::path logs = Session() / "logs";
  std::ifstream meta_in(Session() / "meta.json");
  std::string socket = nlohmann::json::parse(meta_in)["socket"];
  // Every session logs its open, hello and close at debug, ~300 bytes: 1500
  // of them write over 400 KiB, more than the three files keep.
  for (int i = 0; i < 1500; ++i) {
    ConnectOptions o;
    o.socket_path = socket;
    ASSERT_TRUE(Client::Connect(o).ok());
  }
  for (const char* name : {"stdout.log", "stdout.1.log", "stdout.2.log"}) {
    ASSERT_TRUE(fs::exists(logs / name)) << name;
    EXPECT_LE(fs::file_size(logs / name), 64u * 1024 + 4096) << name;
  }
  EXPECT_FALSE(fs::exists(logs / "stdout.3.log"));
  EXPECT_LT(fs::file_size(logs / "stderr.log"), 4096u) << ReadFile(logs / "stderr.log");
  CliResult all = Run("daemon logs");
  EXPECT_EQ(all.code, 0);
  EXPECT_GT(all.out.size(), 2u * 64 * 1024);
  EXPECT_THAT(all.out, HasSubstr("said hello"));
}

// Item 10: the session's logs/stderr.log (the daemon's stdout and stderr:
// output from libraries, crash reports) was never rotated. The daemon now
// rotates it like its log; `daemon logs --stderr` prints the kept files.
TEST_F(CliRegressTest, DaemonStartRotatesTheSessionStderr) {
  CliResult start =
      Run("daemon start " + sets_ + "--set log_max_bytes=64KiB --set log_max_files=2");
  ASSERT_EQ(start.code, 0) << start.out;
  fs::path logs = Session() / "logs";
  std::ifstream meta_in(Session() / "meta.json");
  int pid = nlohmann::json::parse(meta_in)["pid"];
  // Written through the daemon's own descriptor, as a library would write.
  auto write_through_daemon = [&](char fill) {
    std::ofstream(fmt::format("/proc/{}/fd/2", pid), std::ios::app)
        << std::string(80 * 1024 - 1, fill) << "\n";
  };
  // The daemon checks once a second.
  auto starts_with = [&](const char* name, char fill) {
    for (int i = 0; i < 200; ++i) {
      std::ifstream in(logs / name);
      if (in.get() == fill) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  for (char fill : {'a', 'b', 'c'}) {
    write_through_daemon(fill);
    ASSERT_TRUE(starts_with("stderr.1.log", fill)) << "80 KiB did not rotate stderr.log";
  }
  EXPECT_FALSE(fs::exists(logs / "stderr.3.log"));
  for (const char* name : {"stderr.log", "stderr.1.log", "stderr.2.log"}) {
    EXPECT_LE(fs::file_size(logs / name), 80u * 1024) << name;
  }
  EXPECT_EQ(ReadFile(logs / "stderr.1.log"), std::string(80 * 1024 - 1, 'c') + "\n");
  // The daemon's stdout and stderr are the fresh file, not the renamed one.
  struct stat now {
  }, fd1{}, fd2{};
  ASSERT_EQ(::stat((logs / "stderr.log").c_str(), &now), 0);
  ASSERT_EQ(::stat(fmt::format("/proc/{}/fd/1", pid).c_str(), &fd1), 0);
  ASSERT_EQ(::stat(fmt::format("/proc/{}/fd/2", pid).c_str(), &fd2), 0);
  EXPECT_EQ(fd1.st_ino, now.st_ino);
  EXPECT_EQ(fd2.st_ino, now.st_ino);
  CliResult err = Run("daemon logs --stderr");
  EXPECT_EQ(err.code, 0);
  EXPECT_EQ(err.out,
            std::string(80 * 1024 - 1, 'b') + "\n" + std::string(80 * 1024 - 1, 'c') + "\n");
  EXPECT_THAT(ReadFile(logs / "stdout.log"), HasSubstr("rotated"));
}

// Item 10: every `daemon start` made a session directory with its logs and
// none was ever removed; a start keeps the ten newest.
TEST_F(CliRegressTest, DaemonStartKeepsTheTenNewestSessions) {
  std::vector<std::string> started;
  for (int i = 0; i < 12; ++i) {
    CliResult start = Run("--json daemon start " + sets_);
    ASSERT_EQ(start.code, 0) << start.out;
    started.push_back(nlohmann::json::parse(start.out)["session"]);
    ASSERT_EQ(Run("daemon stop --grace 5").code, 0);
  }
  std::vector<std::string> kept;
  for (auto& host : fs::directory_iterator(fs::path(home_) / "hosts")) {
    for (auto& s : fs::directory_iterator(host.path() / "sessions")) {
      kept.push_back(s.path().filename().string());
    }
  }
  std::sort(kept.begin(), kept.end());
  std::vector<std::string> newest(started.end() - 10, started.end());
  std::sort(newest.begin(), newest.end());
  EXPECT_EQ(kept, newest);
  CliResult logs = Run("daemon logs " + started.back());
  EXPECT_EQ(logs.code, 0) << logs.out;
}

// Item 10: libprotobuf wrote its own messages (a hello whose token is not
// UTF-8, say) straight to the daemon's stderr, past the log and its format.
TEST(ProtobufLogRegressTest, ProtobufMessagesGoToTheDaemonLog) {
  char tmpl[] = "/tmp/cistern-pblog-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string log = dir + "/d.log";
  {
    Daemon d(DaemonSpec{.extra_yaml = "log_file: " + log + "\n"});
    std::string err;
    ASSERT_TRUE(d.Start({}, &err)) << err;
    RawConnection c(d.socket_path());
    c.Hello(std::string("ab\xff", 3));
    // An error reply or a closed connection: either way the frame was parsed.
    auto reply = c.Receive();
    if (reply) {
      EXPECT_NE(reply->status().code(), 0);
    }
    std::string text = ReadFile(log);
    EXPECT_THAT(text, HasSubstr("[cisternd] protobuf: String field 'cistern.wire.Hello.token' "
                                "contains invalid UTF-8"));
    EXPECT_THAT(d.Log(), Not(HasSubstr("invalid UTF-8"))) << "stdout/stderr";
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

// Item 11: `put KEY DIR` exited 1 while a missing file exited 2, and `export`
// to a directory exited 1 while `get -o DIR` exited 2. A bad local path is a
// usage error (2), checked before the daemon is asked anything.
TEST(ExitCodeRegressTest, BadLocalPathsExitTwo) {
  Daemon d;
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  std::string addr = "--address " + d.socket_path() + " ";
  std::string file = d.dir() + "/v";
  Write(file, "value");
  ASSERT_EQ(RunCli(addr + "put k " + file).code, 0);
  struct Case {
    std::string args;
    std::string expect;
  } cases[] = {
      {"put k " + d.dir(), "is a directory"},
      {"put k " + d.dir() + "/missing", "cannot open"},
      {"get k -o " + d.dir(), "is a directory"},
      {"get missing -o " + d.dir(), "is a directory"},
      {"get k -o " + d.dir() + "/no/such/out", "does not exist"},
      {"export k " + d.dir(), "is a directory"},
      {"export missing " + d.dir(), "is a directory"},
      {"export k " + d.dir() + "/no/such/out.safetensors", "does not exist"},
      {"load " + d.dir() + "/missing --key x", "cannot open"},
  };
  for (const Case& c : cases) {
    CliResult r = RunCli(addr + c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out;
    EXPECT_THAT(r.out, HasSubstr(c.expect)) << c.args;
  }
  // What the daemon refuses is still 1.
  EXPECT_EQ(RunCli(addr + "get missing -o " + d.dir() + "/out").code, 1);
  EXPECT_EQ(RunCli(addr + "export k " + d.dir() + "/out.safetensors").code, 1);  // raw bytes
  EXPECT_FALSE(fs::exists(d.dir() + "/out"));
}

}  // namespace
}  // namespace cistern::testing
