// The `cistern` command against a real cisternd.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;

using Result = CliResult;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
    addr_ = "--address " + daemon_.socket_path() + " ";
  }
  Daemon daemon_;
  std::string addr_;
};

TEST_F(CliTest, PutGetRoundTripIsByteIdentical) {
  std::string in = daemon_.dir() + "/in.bin", out = daemon_.dir() + "/out.bin";
  std::string data;
  for (int i = 0; i < 300000; ++i) data += static_cast<char>(i * 7);
  std::ofstream(in, std::ios::binary) << data;
  Result put = RunCli(addr_ + "put weights/a " + in);
  ASSERT_EQ(put.code, 0) << put.out;
  EXPECT_THAT(put.out, HasSubstr("generation"));
  Result get = RunCli(addr_ + "get weights/a -o " + out);
  ASSERT_EQ(get.code, 0) << get.out;
  EXPECT_EQ(ReadFile(out), data);
  Result piped = RunCli("--address " + daemon_.socket_path() + " get weights/a | cmp - " + in);
  EXPECT_EQ(piped.code, 0) << piped.out;
}

TEST_F(CliTest, LsStatRmSpeakJson) {
  std::string in = daemon_.dir() + "/v";
  std::ofstream(in) << "value";
  ASSERT_EQ(RunCli(addr_ + "put a/1 " + in).code, 0);
  ASSERT_EQ(RunCli(addr_ + "put --evictable a/2 " + in).code, 0);
  ASSERT_EQ(RunCli(addr_ + "put b/1 - < " + in).code, 0);
  Result ls = RunCli(addr_ + "--json ls a/");
  ASSERT_EQ(ls.code, 0) << ls.out;
  auto listed = nlohmann::json::parse(ls.out, nullptr, false);
  ASSERT_TRUE(listed.is_object()) << ls.out;
  ASSERT_EQ(listed["objects"].size(), 2u) << ls.out;
  EXPECT_EQ(listed["objects"][0]["key"], "a/1");
  EXPECT_EQ(listed["objects"][0]["evictable"], false);
  EXPECT_EQ(listed["objects"][1]["key"], "a/2");
  EXPECT_EQ(listed["objects"][1]["evictable"], true);
  EXPECT_EQ(listed["objects"][1]["size"], 5);
  EXPECT_TRUE(listed["objects"][1]["checksum"].is_string());
  Result stat = RunCli(addr_ + "--json stat b/1");
  ASSERT_EQ(stat.code, 0) << stat.out;
  auto one = nlohmann::json::parse(stat.out, nullptr, false);
  ASSERT_TRUE(one.is_object()) << stat.out;
  EXPECT_EQ(one["key"], "b/1");
  EXPECT_EQ(one["size"], 5);
  EXPECT_EQ(one["generation"], 3);  // generations count every put of the store
  ASSERT_EQ(RunCli(addr_ + "rm a/1").code, 0);
  Result gone = RunCli(addr_ + "stat a/1");
  EXPECT_EQ(gone.code, 1);
  EXPECT_THAT(gone.out, HasSubstr("'a/1' not found"));
}

TEST_F(CliTest, IfAbsentConflictFailsWithExitOne) {
  std::string in = daemon_.dir() + "/v";
  std::ofstream(in) << "v";
  ASSERT_EQ(RunCli(addr_ + "put --if-absent k " + in).code, 0);
  Result again = RunCli(addr_ + "put --if-absent k " + in);
  EXPECT_EQ(again.code, 1);
  EXPECT_THAT(again.out, HasSubstr("exists"));
}

TEST(CliUsageTest, UsageErrorsExitTwoAndNoDaemonExitsOne) {
  EXPECT_EQ(RunCli("").code, 2);
  EXPECT_EQ(RunCli("frobnicate").code, 2);
  EXPECT_EQ(RunCli("put onlykey").code, 2);
  Result down = RunCli("--address /tmp/no-such-cistern.sock get k");
  EXPECT_EQ(down.code, 1);
  EXPECT_THAT(down.out, HasSubstr("is cisternd running?"));
}

TEST(CliConfigTest, ValidateNamesTheBadKeyAndShowEffectiveRoundTrips) {
  Daemon d;  // for its temporary directory and config
  Result ok = RunCli("config validate " + d.config_path());
  EXPECT_EQ(ok.code, 0) << ok.out;
  std::string bad = d.dir() + "/bad.yaml";
  std::ofstream(bad) << "tiers:\n  - name: mem\n    sise: 1GB\n";
  Result err = RunCli("config validate " + bad);
  EXPECT_EQ(err.code, 2);
  EXPECT_THAT(err.out, HasSubstr("tiers[0].sise"));
  Result over = RunCli("config validate " + d.config_path() + " --set tiers.0.low_watermark=2");
  EXPECT_EQ(over.code, 2);
  std::string shown = d.dir() + "/shown.yaml";
  Result show = RunCli("config show --effective --config " + d.config_path() + " > " + shown);
  ASSERT_EQ(show.code, 0) << show.out;
  EXPECT_THAT(ReadFile(shown), HasSubstr("busy_poll_us: 0"));
  EXPECT_EQ(RunCli("config validate " + shown).code, 0) << ReadFile(shown);
}

// docs/operations.md must name every command and option that --help lists.
TEST(CliDocsTest, OperationsGuideCoversEveryCommandAndOption) {
  std::string doc = ReadFile(std::string(CISTERN_SOURCE_DIR) + "/docs/operations.md");
  ASSERT_FALSE(doc.empty());
  std::vector<std::string> commands = {"",
                                       "put",
                                       "get",
                                       "ls",
                                       "stat",
                                       "rm",
                                       "load",
                                       "export",
                                       "config validate",
                                       "config show",
                                       "daemon start",
                                       "daemon stop",
                                       "daemon restart",
                                       "daemon status",
                                       "daemon logs",
                                       "stream",
                                       "stream ls",
                                       "stream show",
                                       "stream reconcile",
                                       "locate",
                                       "replicate"};
  for (const std::string& cmd : commands) {
    if (!cmd.empty()) {
      EXPECT_NE(doc.find("cistern " + cmd), std::string::npos) << "`cistern " << cmd << "`";
    }
    Result help = RunCli(cmd + " --help");
    ASSERT_EQ(help.code, 0) << cmd;
    std::istringstream lines(help.out);
    for (std::string line; std::getline(lines, line);) {
      for (size_t at = line.find("--"); at != std::string::npos; at = line.find("--", at + 2)) {
        size_t end = line.find_first_of(" ,=:;)", at);
        std::string option = line.substr(at, end == std::string::npos ? end : end - at);
        if (option == "--help" || option.size() < 3) continue;
        EXPECT_NE(doc.find(option), std::string::npos)
            << "docs/operations.md lacks `cistern " << cmd << "` option " << option;
      }
    }
  }
}

TEST(CliConfigTest, ShippedExampleConfigIsValid) {
  Result r =
      RunCli(std::string("config validate ") + CISTERN_SOURCE_DIR + "/deploy/config/cisternd.yaml");
  EXPECT_EQ(r.code, 0) << r.out;
}

}  // namespace
}  // namespace cistern::testing
