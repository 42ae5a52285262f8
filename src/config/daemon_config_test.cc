#include "src/config/daemon_config.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/stream/stream.h"

namespace cistern::config {
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
  EXPECT_TRUE(cfg->fast_path().enabled());
  // Busy polling is off unless asked for, and a value asked for is kept.
  EXPECT_EQ(cfg->busy_poll_us(), 0u);
  auto poll = LoadDaemonConfig("", {"busy_poll_us=200"});
  ASSERT_TRUE(poll.ok()) << poll.status();
  EXPECT_EQ(poll->busy_poll_us(), 200u);
  // One slot per 16 KiB of arena by default.
  EXPECT_EQ(cfg->fast_path().index_slots(),
            std::clamp<uint64_t>(std::bit_ceil(cfg->tiers(0).size() / 16384), 4096, 1u << 22));
  auto big = LoadDaemonConfig("", {"tiers.0.name=mem", "tiers.0.size=1GiB"});
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->fast_path().index_slots(), 65536u);
  auto off = LoadDaemonConfig("", {"fast_path.enabled=false"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->fast_path().enabled());
  // Arenas are pre-faulted unless a tier says otherwise.
  EXPECT_TRUE(cfg->tiers(0).prefault());
  auto lazy =
      LoadDaemonConfig("", {"tiers.0.name=mem", "tiers.0.size=1GiB", "tiers.0.prefault=false"});
  ASSERT_TRUE(lazy.ok()) << lazy.status();
  EXPECT_FALSE(lazy->tiers(0).prefault());
  auto bad =
      LoadDaemonConfig("", {"tiers.0.name=mem", "tiers.0.size=1GiB", "tiers.0.prefault=sometimes"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("prefault"));
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
      {{"fast_path.index_slots=1000"}, "fast_path.index_slots 1000"},
      {{"fast_path.index_slots=512"}, "fast_path.index_slots 512"},
  };
  for (const Case& c : cases) {
    auto cfg = LoadDaemonConfig("", c.sets);
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << c.expect;
    EXPECT_THAT(std::string(cfg.status().message()), HasSubstr(c.expect));
  }
}

// ---- Regressions: issue 9 ----

// `hello_timeout_ms: 10000000000000` validated, then overflowed the daemon's
// deadline arithmetic, so every connection was closed as "no hello".
TEST(DaemonConfigRegressionTest, HelloTimeoutOutsideItsRangeIsRejected) {
  for (std::string v : {"10000000000000", "18446744073709551615", "2h"}) {
    auto cfg = LoadDaemonConfig("", {"hello_timeout_ms=" + v});
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << v;
    EXPECT_THAT(std::string(cfg.status().message()), HasSubstr("hello_timeout_ms")) << v;
  }
  EXPECT_TRUE(LoadDaemonConfig("", {"hello_timeout_ms=1h"}).ok());
}

// `streams.lease_timeout_ms: 720h` passed `config validate`, then every stream
// open failed on the stream's own 7-day limit.
TEST(DaemonConfigRegressionTest, StreamDefaultsGetTheChecksOfAStreamOpen) {
  auto cfg = LoadDaemonConfig("", {"streams.lease_timeout_ms=720h"});
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cfg.status().message()),
              HasSubstr("streams.lease_timeout_ms 2592000000 must be 1..604800000"));
  auto week = LoadDaemonConfig("", {"streams.lease_timeout_ms=168h"});
  ASSERT_TRUE(week.ok()) << week.status();
  // What the daemon passes to every stream open passes the stream's check.
  wire::StreamOptions o;
  o.set_lease_timeout_ms(week->streams().lease_timeout_ms());
  o.set_high_watermark_bytes(week->streams().high_watermark_bytes());
  o.set_low_watermark_bytes(week->streams().low_watermark_bytes());
  o.set_max_in_flight_per_producer(0);
  o.set_max_lease_refs(week->streams().max_lease_refs());
  EXPECT_TRUE(stream::ValidateOptions(o).ok());
}

// Duration and size keys had no upper bound, so values the daemon cannot use
// passed validation; every such key, present and future, must have one.
TEST(DaemonConfigRegressionTest, EveryDurationAndSizeKeyHasARange) {
  using google::protobuf::Descriptor;
  using google::protobuf::FieldDescriptor;
  // Dotted --set paths of every singular duration or size field, through
  // sub-messages (tiers.0.size, streams.lease_timeout_ms, ...).
  std::vector<std::string> keys;
  std::function<void(const Descriptor*, const std::string&)> walk = [&](const Descriptor* d,
                                                                        const std::string& prefix) {
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      std::string key = prefix + f->name();
      if (f->message_type() != nullptr) {
        walk(f->message_type(), key + (f->is_repeated() ? ".0." : "."));
      } else if (!f->is_repeated() && (f->options().GetExtension(config::duration_ms) ||
                                       f->options().GetExtension(config::size))) {
        keys.push_back(key);
      }
    }
  };
  walk(config::DaemonConfig::descriptor(), "");
  ASSERT_THAT(keys, ::testing::IsSupersetOf({"hello_timeout_ms", "tiers.0.size",
                                             "streams.lease_timeout_ms", "log_max_bytes"}));
  for (const std::string& key : keys) {
    std::vector<std::string> sets = {key + "=18446744073709551615"};
    if (key.rfind("tiers.0.", 0) == 0) sets.insert(sets.begin(), "tiers.0.name=mem");
    auto cfg = LoadDaemonConfig("", sets);
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << key;
    std::string path = key;
    if (auto p = path.find(".0."); p != std::string::npos) path.replace(p, 3, "[0].");
    EXPECT_THAT(std::string(cfg.status().message()), HasSubstr(path)) << key;
  }
}

TEST(DaemonConfigTest, PullStallTimeoutMustLeaveTimeForAChunk) {
  std::vector<std::string> cluster = {"cluster.registry=198.18.0.1:7470", "cluster.cluster_id=c",
                                      "cluster.token=t", "cluster.advertise=198.18.0.2:7471"};
  auto defaults = LoadDaemonConfig("", cluster);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->cluster().pull_stall_timeout_ms(), 10000u);
  auto sets = cluster;
  sets.push_back("cluster.pull_stall_timeout_ms=50ms");
  auto cfg = LoadDaemonConfig("", sets);
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cfg.status().message()),
              HasSubstr("cluster.pull_stall_timeout_ms 50 is outside 100..3600000"));
  sets.back() = "cluster.pull_stall_timeout_ms=2s";
  auto ok = LoadDaemonConfig("", sets);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->cluster().pull_stall_timeout_ms(), 2000u);
}

TEST(DaemonConfigTest, TransferIsAutoAmOrGet) {
  std::vector<std::string> cluster = {"cluster.registry=198.18.0.1:7470", "cluster.cluster_id=c",
                                      "cluster.token=t", "cluster.advertise=198.18.0.2:7471"};
  auto defaults = LoadDaemonConfig("", cluster);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->cluster().transfer(), "auto");
  for (std::string v : {"am", "get", "auto"}) {
    auto sets = cluster;
    sets.push_back("cluster.transfer=" + v);
    EXPECT_TRUE(LoadDaemonConfig("", sets).ok()) << v;
  }
  auto sets = cluster;
  sets.push_back("cluster.transfer=rdma");
  auto bad = LoadDaemonConfig("", sets);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("cluster.transfer 'rdma' must be auto, am or get"));
}

// A token that is not UTF-8 was accepted though no client can send it.
TEST(DaemonConfigRegressionTest, TokenMustBeUtf8) {
  auto cfg = LoadDaemonConfig("", {"token=ab\xff"});
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cfg.status().message()), HasSubstr("token"));
  config::DaemonConfig direct;
  ApplyDefaults(&direct);
  direct.set_token("ab\xff");
  EXPECT_THAT(std::string(ValidateDaemonConfig(direct).message()), HasSubstr("token"));
}

}  // namespace
}  // namespace cistern::config
