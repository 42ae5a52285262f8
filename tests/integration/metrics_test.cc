// cisternd's HTTP endpoint against a real daemon: /metrics after real
// traffic (checked by promtool), /health, a metrics port that is taken, and
// the rotating log file.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "include/cistern/client.h"
#include "include/cistern/stream.h"
#include "tests/integration/daemon_harness.h"
#include "tests/util/promtool.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;

double Sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

class MetricsEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
    port_ = daemon_.metrics_port();
    ASSERT_NE(port_, 0) << daemon_.Log();
  }

  Daemon daemon_{DaemonSpec{64 << 20, "metrics_port: 0\n"}};
  uint16_t port_ = 0;
};

TEST_F(MetricsEndpointTest, HealthIsOkWhileServing) {
  HttpResult r = HttpGet(port_, "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(HttpGet(port_, "/nope").status, 404);
}

TEST_F(MetricsEndpointTest, ScrapeReflectsTrafficAndPassesPromtool) {
  HttpResult before = HttpGet(port_, "/metrics");
  ASSERT_EQ(before.status, 200);
  double gets_before = Sample(before.body, "cistern_requests_total{verb=\"get\"}");
  ASSERT_GE(gets_before, 0) << before.body;
  {
    // Gets on the fast path never reach the daemon: count requests without it.
    auto c = daemon_.Connect("", /*fast_path=*/false);
    ASSERT_TRUE(c.ok()) << c.status();
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE((*c)->Put("k" + std::to_string(i), std::string(10000, 'x')).ok());
    }
    auto v0 = (*c)->Get("k0");
    ASSERT_TRUE(v0.ok());
    ASSERT_TRUE((*c)->Get("k1").ok());
    EXPECT_EQ((*c)->Get("missing").status().code(), absl::StatusCode::kNotFound);

    HttpResult after = HttpGet(port_, "/metrics");
    ASSERT_EQ(after.status, 200);
    const std::string& t = after.body;
    EXPECT_EQ(Sample(t, "cistern_requests_total{verb=\"get\"}"), gets_before + 3) << t;
    EXPECT_EQ(Sample(t, "cistern_request_errors_total{code=\"not_found\",verb=\"get\"}"), 1) << t;
    EXPECT_EQ(Sample(t, "cistern_request_duration_seconds_count{verb=\"get\"}"), gets_before + 3);
    EXPECT_GE(Sample(t, "cistern_requests_total{verb=\"hello\"}"), 1);
    EXPECT_EQ(Sample(t, "cistern_objects"), 3) << t;
    EXPECT_GE(Sample(t, "cistern_leases"), 1) << t;  // v0 is held
    EXPECT_GE(Sample(t, "cistern_sessions"), 1) << t;
    EXPECT_EQ(Sample(t, "cistern_tier_bytes{kind=\"capacity\",tier=\"mem\"}"),
              (*c)->Stats()->tiers(0).capacity_bytes());
    EXPECT_GE(Sample(t, "cistern_tier_bytes{kind=\"used\",tier=\"mem\"}"), 30000);
    EXPECT_EQ(Sample(t, "cistern_evictions_total{tier=\"mem\"}"), 0);

    // Exit 0 means promtool parsed it and found nothing to lint.
    PromtoolResult lint = PromtoolCheck(t);
    EXPECT_EQ(lint.exit_code, 0) << "promtool check metrics:\n" << lint.output;
  }
}

TEST_F(MetricsEndpointTest, LedgerWritesAreCountedAndEachAnsweredCommitIsDurable) {
  auto c = daemon_.Connect();
  ASSERT_TRUE(c.ok()) << c.status();
  auto s = Stream::Open(c->get(), "metered");
  ASSERT_TRUE(s.ok()) << s.status();
  HttpResult before = HttpGet(port_, "/metrics");
  ASSERT_EQ(before.status, 200);
  double writes_before = Sample(before.body, "cistern_ledger_writes_total");
  ASSERT_GE(writes_before, 1) << before.body;  // the stream's meta record
  for (int i = 0; i < 5; ++i) {
    std::string key = "m" + std::to_string(i);
    auto ref = (*c)->Put(key, std::string(100, 'm'));
    ASSERT_TRUE(ref.ok()) << ref.status();
    ASSERT_TRUE(
        s->Commit({SampleRef{.sample_id = key, .key = key, .generation = ref->generation}}).ok());
  }
  HttpResult after = HttpGet(port_, "/metrics");
  ASSERT_EQ(after.status, 200);
  const std::string& t = after.body;
  double writes = Sample(t, "cistern_ledger_writes_total");
  EXPECT_EQ(writes, writes_before + 5) << t;
  // Every commit was answered, so every write it made is durable.
  EXPECT_EQ(Sample(t, "cistern_ledger_durable_writes_total"), writes) << t;
  EXPECT_GE(Sample(t, "cistern_ledger_syncs_total"), 5) << t;  // one session: one sync each
  EXPECT_EQ(Sample(t, "cistern_ledger_sync_failed"), 0) << t;
  EXPECT_GE(Sample(t, "cistern_ledger_checkpoints_total"), 0) << t;
}

TEST_F(MetricsEndpointTest, RecoveredObjectsAreCountedAfterARestart) {
  {
    auto c = daemon_.Connect();
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE((*c)->Put("kept", std::string(5000, 'k')).ok());
  }
  daemon_.Kill(SIGKILL);
  daemon_.Wait();
  std::string err;
  ASSERT_TRUE(daemon_.Start({}, &err)) << err;
  // The log now holds both starts; metrics_port() reads the last one.
  port_ = daemon_.metrics_port();
  HttpResult r = HttpGet(port_, "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Sample(r.body, "cistern_recovered_objects"), 1) << r.body;
  EXPECT_EQ(Sample(r.body, "cistern_recovered_bytes"), 5000) << r.body;
}

TEST_F(MetricsEndpointTest, SecondDaemonOnTheSamePortExits2NamingItAndLeavesNothing) {
  Daemon second(DaemonSpec{64 << 20, fmt::format("metrics_port: {}\n", port_)});
  EXPECT_EQ(second.RunToExit(), 2);
  EXPECT_THAT(second.Log(),
              HasSubstr(fmt::format("127.0.0.1:{}: port {} is already in use", port_, port_)));
  EXPECT_FALSE(std::filesystem::exists(second.arena_path()));
  EXPECT_FALSE(std::filesystem::exists(second.socket_path()));
  // The first daemon is untouched.
  EXPECT_EQ(HttpGet(port_, "/health").status, 200);
  EXPECT_TRUE(daemon_.Connect().ok());
}

TEST(MetricsLogTest, LogFileRotatesAtLogMaxBytes) {
  char tmpl[] = "/tmp/cistern-log-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string log = dir + "/logs/cisternd.log";
  {
    Daemon d(DaemonSpec{64 << 20, fmt::format("metrics_port: 0\nlog_file: {}\n"
                                              "log_max_bytes: 64KiB\nlog_max_files: 2\n",
                                              log)});
    std::string err;
    ASSERT_TRUE(d.Start({}, &err)) << err;
    // Each session logs two debug lines, opened and closed (the harness runs
    // the daemon at debug). Rejected requests would not do: their lines are
    // rate-limited.
    for (int i = 0; i < 1500; ++i) {
      auto c = d.Connect();
      ASSERT_TRUE(c.ok()) << c.status();
    }
    d.Kill(SIGTERM);
    EXPECT_EQ(d.Wait(), 0);
  }
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::exists(dir + "/logs/cisternd.1.log"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/logs/cisternd.3.log"));
  EXPECT_LE(std::filesystem::file_size(log, ec), 64u << 10);
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("stopped cleanly"));
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace cistern::testing
