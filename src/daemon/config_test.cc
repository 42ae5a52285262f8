#include "src/daemon/config.h"

#include <unistd.h>

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cistern::daemon {
namespace {

using ::testing::HasSubstr;

std::string WriteTemp(const std::string& text) {
  std::string path = ::testing::TempDir() + "/cfg-" + std::to_string(getpid()) + ".yaml";
  std::ofstream(path) << text;
  return path;
}

TEST(DaemonConfigTest, DefaultsAreValid) {
  auto cfg = LoadDaemonConfig("", {});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  ASSERT_EQ(cfg->tiers_size(), 1);
  EXPECT_EQ(cfg->tiers(0).name(), "mem");
  EXPECT_DOUBLE_EQ(cfg->tiers(0).high_watermark(), 0.95);
  EXPECT_THAT(cfg->socket_path(), HasSubstr("cisternd.sock"));
  EXPECT_EQ(cfg->allowed_uids(0), geteuid());
}

TEST(DaemonConfigTest, FileAndOverridesCombine) {
  std::string path = WriteTemp(
      "tiers:\n  - name: hot\n    size: 64MiB\n    high_watermark: 90%\nlog_level: debug\n");
  auto cfg = LoadDaemonConfig(path, {"tiers.0.size=128MiB", "token=s3cret"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->tiers(0).size(), 128u << 20);
  EXPECT_DOUBLE_EQ(cfg->tiers(0).high_watermark(), 0.9);
  EXPECT_DOUBLE_EQ(cfg->tiers(0).low_watermark(), 0.85);
  EXPECT_EQ(cfg->token(), "s3cret");
  EXPECT_EQ(cfg->log_level(), config::LOG_LEVEL_DEBUG);
}

TEST(DaemonConfigTest, UnknownKeyIsNamed) {
  std::string path = WriteTemp("tiers:\n  - name: a\n    sise: 1GB\n");
  auto cfg = LoadDaemonConfig(path, {});
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cfg.status().message()), HasSubstr("sise"));
}

TEST(DaemonConfigTest, SemanticErrorsNameTheKey) {
  struct Case {
    std::vector<std::string> sets;
    std::string expect;
  } cases[] = {
      {{"tiers.0.name=mem", "tiers.0.size=4GB", "tiers.0.low_watermark=0.99",
        "tiers.0.high_watermark=0.5"},
       "tiers[0].low_watermark"},
      {{"tiers.0.name=Bad Name", "tiers.0.size=4MiB"}, "tiers[0].name"},
      {{"tiers.0.name=a", "tiers.0.size=4MiB", "tiers.1.name=a", "tiers.1.size=4MiB"},
       "tiers[1].name"},
      {{"tiers.0.name=a", "tiers.0.size=1000"}, "tiers[0].size 0 is below"},
      {{"tiers.0.name=a", "tiers.0.size=1000TiB"}, "physical memory"},
      {{"socket_path=/tmp/" + std::string(200, 's')}, "socket_path"},
      {{"socket_path=relative.sock"}, "absolute"},
  };
  for (const Case& c : cases) {
    auto cfg = LoadDaemonConfig("", c.sets);
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << c.expect;
    EXPECT_THAT(std::string(cfg.status().message()), HasSubstr(c.expect));
  }
}

}  // namespace
}  // namespace cistern::daemon
