// The metrics endpoint's parts: the HTTP server (over loopback), the metric
// names and text, and the config keys that configure them.
#include "src/daemon/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/config/daemon_config.h"
#include "src/store/store_test_util.h"
#include "tests/util/promtool.h"
#include "tests/util/raw_http.h"

namespace cistern::daemon {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using namespace cistern::testing_http;

// --- metric names and text --------------------------------------------------

TEST(MetricsTest, VerbNamesAreTheProtocolsFieldNames) {
  const auto* oneof = wire::Request::descriptor()->FindOneofByName("body");
  ASSERT_NE(oneof, nullptr);
  std::set<std::string_view> seen;
  for (int i = 0; i < oneof->field_count(); ++i) {
    const auto* field = oneof->field(i);
    wire::Request req;
    req.GetReflection()->MutableMessage(&req, field);
    Verb v = VerbOf(req);
    EXPECT_NE(v, Verb::kInvalid) << field->name();
    EXPECT_EQ(VerbName(v), field->name());
    seen.insert(VerbName(v));
  }
  EXPECT_EQ(seen.size() + 1, kVerbCount);  // and "invalid"
  EXPECT_EQ(VerbOf(wire::Request()), Verb::kInvalid);
  EXPECT_EQ(VerbName(Verb::kInvalid), "invalid");
}

TEST(MetricsTest, StatusCodeLabelsAreSnakeCase) {
  EXPECT_EQ(StatusCodeLabel(absl::StatusCode::kNotFound), "not_found");
  EXPECT_EQ(StatusCodeLabel(absl::StatusCode::kResourceExhausted), "resource_exhausted");
}

TEST(MetricsTest, RequestsAreCountedByVerbAndErrorsByCode) {
  Metrics m("9.9.9");
  m.requests()->Record(Verb::kGet, absl::StatusCode::kOk, std::chrono::microseconds(3));
  m.requests()->Record(Verb::kGet, absl::StatusCode::kNotFound, std::chrono::milliseconds(3));
  m.requests()->Record(Verb::kGet, absl::StatusCode::kNotFound, std::chrono::microseconds(1));
  m.requests()->Record(Verb::kCreate, absl::StatusCode::kResourceExhausted,
                       std::chrono::seconds(2));
  std::string text = m.Scrape();
  EXPECT_THAT(text, HasSubstr("cistern_requests_total{verb=\"get\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("cistern_requests_total{verb=\"seal\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("cistern_request_errors_total{code=\"not_found\",verb=\"get\"} 2\n"));
  EXPECT_THAT(
      text,
      HasSubstr("cistern_request_errors_total{code=\"resource_exhausted\",verb=\"create\"} 1\n"));
  // 1 µs falls in the first bucket (upper bounds are inclusive), 3 µs in 5 µs.
  EXPECT_THAT(text,
              HasSubstr("cistern_request_duration_seconds_bucket{verb=\"get\",le=\"1e-06\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("cistern_request_duration_seconds_bucket{verb=\"get\",le=\"5e-06\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("cistern_request_duration_seconds_bucket{verb=\"get\",le=\"0.005\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("cistern_request_duration_seconds_count{verb=\"get\"} 3\n"));
  EXPECT_THAT(text,
              HasSubstr("cistern_request_duration_seconds_bucket{verb=\"create\",le=\"0.1\"} 0\n"));
  EXPECT_THAT(
      text, HasSubstr("cistern_request_duration_seconds_bucket{verb=\"create\",le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("cistern_build_info{version=\"9.9.9\"} 1\n"));
}

TEST(MetricsTest, StoreAndSessionFiguresAreReadAtScrapeTime) {
  store::StoreHarness h(8 << 20);
  Metrics m("0");
  std::string text = m.Scrape();
  EXPECT_THAT(text, Not(HasSubstr("cistern_objects")));  // not attached yet
  std::atomic<uint64_t> sessions{3};
  m.Attach(&h.store(), [&] { return sessions.load(); });
  ASSERT_TRUE(h.Put(1, "k", std::string(1000, 'x'), /*evictable=*/true).ok());
  ASSERT_TRUE(h.store().Get(1, "k", 0).ok());
  text = m.Scrape();
  EXPECT_THAT(text, HasSubstr("cistern_objects 1\n"));
  EXPECT_THAT(text, HasSubstr("cistern_leases 1\n"));
  EXPECT_THAT(text, HasSubstr("cistern_sessions 3\n"));
  EXPECT_THAT(text,
              HasSubstr(fmt::format("cistern_tier_bytes{{kind=\"capacity\",tier=\"mem\"}} {}\n",
                                    h.store().Stats().tiers[0].capacity_bytes)));
  EXPECT_THAT(text, ContainsRegex("cistern_tier_bytes\\{kind=\"used\",tier=\"mem\"\\} [1-9]"));
  EXPECT_THAT(text,
              HasSubstr("cistern_tier_bytes{kind=\"evictable\",tier=\"mem\"} 0\n"));  // leased
  EXPECT_THAT(text, HasSubstr("cistern_evictions_total{tier=\"mem\"} 0\n"));
  h.store().CloseSession(1);
  sessions = 0;
  text = m.Scrape();
  EXPECT_THAT(text, HasSubstr("cistern_leases 0\n"));
  EXPECT_THAT(text, HasSubstr("cistern_sessions 0\n"));
  EXPECT_THAT(text, ContainsRegex("cistern_tier_bytes\\{kind=\"evictable\",tier=\"mem\"\\} [1-9]"));
  m.Detach();
  EXPECT_THAT(m.Scrape(), Not(HasSubstr("cistern_sessions")));
}

TEST(MetricsTest, RecoveryReportIsExposed) {
  Metrics m("0");
  store::RecoveryReport r;
  r.objects = 7;
  r.bytes = 7000;
  r.dropped.resize(2);
  m.SetRecovery(r);
  std::string text = m.Scrape();
  EXPECT_THAT(text, HasSubstr("cistern_recovered_objects 7\n"));
  EXPECT_THAT(text, HasSubstr("cistern_recovered_bytes 7000\n"));
  EXPECT_THAT(text, HasSubstr("cistern_recovery_dropped_objects 2\n"));
}

// Every family is named cistern_*, says what it counts in its unit, and
// counters end in _total (the names dashboards will be built on).
TEST(MetricsTest, FamilyNamesAndTypesAreTheDocumentedOnes) {
  store::StoreHarness h(8 << 20);
  Metrics m("0");
  m.Attach(&h.store(), [] { return uint64_t{0}; });
  registry::MemoryBackend ledger;
  m.AttachLedger(&ledger);
  m.requests()->Record(Verb::kGet, absl::StatusCode::kNotFound, std::chrono::microseconds(1));
  std::map<std::string, std::string> types;
  std::istringstream in(m.Scrape());
  std::regex type_line("# TYPE (\\S+) (\\S+)");
  for (std::string line; std::getline(in, line);) {
    std::smatch match;
    if (std::regex_match(line, match, type_line)) types[match[1]] = match[2];
  }
  std::map<std::string, std::string> want = {
      {"cistern_requests_total", "counter"},
      {"cistern_request_errors_total", "counter"},
      {"cistern_request_duration_seconds", "histogram"},
      {"cistern_tier_bytes", "gauge"},
      {"cistern_evictions_total", "counter"},
      {"cistern_objects", "gauge"},
      {"cistern_leases", "gauge"},
      {"cistern_pending_writes", "gauge"},
      {"cistern_reserved_bytes", "gauge"},
      {"cistern_quarantined_objects", "gauge"},
      {"cistern_quarantined_bytes", "gauge"},
      {"cistern_sessions", "gauge"},
      {"cistern_ledger_writes_total", "counter"},
      {"cistern_ledger_durable_writes_total", "counter"},
      {"cistern_ledger_syncs_total", "counter"},
      {"cistern_ledger_checkpoints_total", "counter"},
      {"cistern_ledger_sync_failed", "gauge"},
      {"cistern_recovered_objects", "gauge"},
      {"cistern_recovered_bytes", "gauge"},
      {"cistern_recovery_dropped_objects", "gauge"},
      {"cistern_start_time_seconds", "gauge"},
      {"cistern_build_info", "gauge"},
  };
  EXPECT_EQ(types, want);
}

TEST(MetricsTest, TextPassesPromtool) {
  store::StoreHarness h(8 << 20);
  Metrics m("0.1.0");
  m.Attach(&h.store(), [] { return uint64_t{1}; });
  for (size_t v = 0; v < kVerbCount; ++v) {
    m.requests()->Record(static_cast<Verb>(v), absl::StatusCode::kOk, std::chrono::microseconds(v));
    m.requests()->Record(static_cast<Verb>(v), absl::StatusCode::kInternal,
                         std::chrono::microseconds(v));
  }
  testing::PromtoolResult lint = testing::PromtoolCheck(m.Scrape());
  EXPECT_EQ(lint.exit_code, 0) << lint.output;
  EXPECT_EQ(lint.output, "");
}

TEST(MetricsTest, HealthFollowsTheDaemonsState) {
  Metrics m("0");
  EXPECT_EQ(m.HealthPage().status, 503);
  EXPECT_EQ(m.HealthPage().body, "starting\n");
  m.set_state(HealthState::kReady);
  EXPECT_EQ(m.HealthPage().status, 200);
  EXPECT_EQ(m.HealthPage().body, "ok\n");
  m.set_state(HealthState::kDraining);
  EXPECT_EQ(m.HealthPage().status, 503);
  EXPECT_EQ(m.HealthPage().body, "draining\n");
}

TEST(MetricsTest, ScrapesRaceWithRecordingWithoutHarm) {
  store::StoreHarness h(8 << 20);
  Metrics m("0");
  m.Attach(&h.store(), [] { return uint64_t{0}; });
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    while (!done.load()) m.Scrape();
  });
  for (int i = 0; i < 20000; ++i) {
    m.requests()->Record(i % 2 ? Verb::kGet : Verb::kSeal,
                         i % 3 ? absl::StatusCode::kOk : absl::StatusCode::kNotFound,
                         std::chrono::microseconds(i % 100));
  }
  done = true;
  scraper.join();
  EXPECT_THAT(m.Scrape(), HasSubstr("cistern_requests_total{verb=\"get\"} 10000\n"));
}

// --- config keys --------------------------------------------------------------

TEST(MetricsConfigTest, Defaults) {
  auto cfg = config::LoadDaemonConfig("", {});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->metrics_address(), "127.0.0.1");
  EXPECT_EQ(cfg->metrics_port(), 9464u);
  EXPECT_EQ(cfg->log_file(), "");
  EXPECT_EQ(cfg->log_max_bytes(), 64u << 20);
  EXPECT_EQ(cfg->log_max_files(), 5u);
}

TEST(MetricsConfigTest, PortZeroStaysZeroAndSizesParse) {
  auto cfg = config::LoadDaemonConfig(
      "", {"metrics_port=0", "metrics_address=::1", "log_file=/tmp/x/cisternd.log",
           "log_max_bytes=1MiB", "log_max_files=2"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->metrics_port(), 0u);
  EXPECT_EQ(cfg->metrics_address(), "::1");
  EXPECT_EQ(cfg->log_max_bytes(), 1u << 20);
  EXPECT_EQ(cfg->log_max_files(), 2u);
}

TEST(MetricsConfigTest, BadValuesNameTheKey) {
  struct Case {
    std::string set;
    std::string expect;
  } cases[] = {
      {"metrics_address=localhost", "metrics_address 'localhost'"},
      {"metrics_address=10.0.0.300", "metrics_address"},
      {"metrics_port=65536", "metrics_port 65536"},
      {"log_max_bytes=1KiB", "log_max_bytes"},
      {"log_max_files=5000", "log_max_files"},
  };
  for (const auto& c : cases) {
    auto cfg = config::LoadDaemonConfig("", {c.set});
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << c.set;
    EXPECT_THAT(std::string(cfg.status().message()), HasSubstr(c.expect)) << c.set;
  }
}

}  // namespace
}  // namespace cistern::daemon
