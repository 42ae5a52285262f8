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
#include "src/daemon/http_server.h"
#include "src/store/store_test_util.h"
#include "tests/util/promtool.h"

namespace cistern::daemon {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Connects to 127.0.0.1:port; -1 on failure.
int Dial(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};  // a broken server fails the test instead of hanging it
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Reads until the server closes.
std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, n);
  }
  return out;
}

// Sends `request` as is and returns the whole response.
std::string Exchange(uint16_t port, const std::string& request) {
  int fd = Dial(port);
  if (fd < 0) return "connect failed";
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += n;
  }
  std::string out = ReadAll(fd);
  ::close(fd);
  return out;
}

std::string Get(uint16_t port, const std::string& target) {
  return Exchange(port, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

std::string Body(const std::string& response) {
  size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServerOptions o;
    o.request_timeout = std::chrono::seconds(1);
    server_ = std::make_unique<HttpServer>(o);
    server_->Handle("/hello", [] {
      HttpResponse r;
      r.body = "hi\n";
      return r;
    });
    ASSERT_TRUE(server_->Start().ok());
  }

  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ServesARegisteredPathAndCloses) {
  std::string r = Get(server_->port(), "/hello");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(r, HasSubstr("Content-Length: 3\r\n"));
  EXPECT_THAT(r, HasSubstr("Connection: close\r\n"));
  EXPECT_EQ(Body(r), "hi\n");
}

TEST_F(HttpServerTest, QueryStringIsIgnoredAndHttp10Served) {
  EXPECT_THAT(Exchange(server_->port(), "GET /hello?x=1 HTTP/1.0\r\n\r\n"),
              StartsWith("HTTP/1.1 200 OK"));
}

TEST_F(HttpServerTest, UnknownPathIs404) {
  EXPECT_THAT(Get(server_->port(), "/nope"), StartsWith("HTTP/1.1 404 Not Found"));
  EXPECT_THAT(Get(server_->port(), "/hello/"), StartsWith("HTTP/1.1 404"));
}

TEST_F(HttpServerTest, OtherMethodsAre405WithAllow) {
  for (std::string m : {"POST", "HEAD", "PUT", "DELETE", "OPTIONS"}) {
    std::string r = Exchange(server_->port(), m + " /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    EXPECT_THAT(r, StartsWith("HTTP/1.1 405 Method Not Allowed")) << m;
    EXPECT_THAT(r, HasSubstr("Allow: GET\r\n")) << m;
  }
}

TEST_F(HttpServerTest, MalformedRequestsAreRefusedAndServingGoesOn) {
  for (std::string req : {
           "GARBAGE\r\n\r\n", "GET /hello\r\n\r\n", "GET /hello HTTP/1.1 extra\r\n\r\n",
           "GET /hello HTTP/2.0\r\n\r\n",
           "\x16\x03\x01\x02\x01\x01\x01\x01\xfc\x03\x03\r\n\r\n",  // TLS
       }) {
    EXPECT_THAT(Exchange(server_->port(), req), StartsWith("HTTP/1.1 400 Bad Request")) << req;
  }
  EXPECT_THAT(Get(server_->port(), "/hello"), StartsWith("HTTP/1.1 200"));
}

TEST_F(HttpServerTest, OversizedRequestIsRefused) {
  // Headers beyond the library's 8 KiB limit, never finished.
  std::string req = "GET /hello HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a');
  EXPECT_THAT(Exchange(server_->port(), req), Not(HasSubstr("200 OK")));
  // A request with a body (GET has none).
  std::string r =
      Exchange(server_->port(), "GET /hello HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 413"));
  EXPECT_THAT(Get(server_->port(), "/hello"), StartsWith("HTTP/1.1 200"));
}

TEST_F(HttpServerTest, ClientThatClosesMidRequestGetsNoAnswer) {
  int fd = Dial(server_->port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::send(fd, "GET /hel", 8, 0), 8);
  ::shutdown(fd, SHUT_WR);
  EXPECT_THAT(ReadAll(fd), Not(HasSubstr("200 OK")));
  ::close(fd);
  EXPECT_THAT(Get(server_->port(), "/hello"), StartsWith("HTTP/1.1 200"));
}

TEST_F(HttpServerTest, SilentClientIsDisconnectedAndOthersAreServedMeanwhile) {
  int fd = Dial(server_->port());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::send(fd, "GET /hello HTTP/1.1\r\n", 21, 0), 21);
  // Served while the silent one holds its worker.
  for (int i = 0; i < 5; ++i)
    EXPECT_THAT(Get(server_->port(), "/hello"), StartsWith("HTTP/1.1 200"));
  // After request_timeout (1 s) the server hangs up: the read ends with an
  // orderly close (0), not with the test's own 10 s receive timeout (EAGAIN),
  // and with no 200.
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, n);
  EXPECT_EQ(n, 0) << std::strerror(errno);
  EXPECT_THAT(got, Not(HasSubstr("200 OK")));
  ::close(fd);
}

TEST_F(HttpServerTest, ManyClientsAtOnceAreAllServed) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 40; ++i) {
    threads.emplace_back([&] {
      if (Get(server_->port(), "/hello").starts_with("HTTP/1.1 200")) ok.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 40);
}

TEST(HttpServerBindTest, PortInUseIsFailedPreconditionNamingThePort) {
  HttpServer first({});
  ASSERT_TRUE(first.Start().ok());
  HttpServerOptions o;
  o.port = first.port();
  HttpServer second(o);
  absl::Status s = second.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(fmt::format("127.0.0.1:{}: port {} is already in use", o.port, o.port)));
  // The first still serves alone.
  EXPECT_THAT(Get(first.port(), "/x"), StartsWith("HTTP/1.1 404"));
}

TEST(HttpServerBindTest, AddressMustBeNumeric) {
  HttpServerOptions o;
  o.address = "localhost";
  HttpServer s(o);
  absl::Status st = s.Start();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("'localhost'"));
}

TEST(HttpServerBindTest, ServesOnIpv6Loopback) {
  HttpServerOptions o;
  o.address = "::1";
  HttpServer s(o);
  s.Handle("/hello", [] { return HttpResponse{.body = "hi\n"}; });
  ASSERT_TRUE(s.Start().ok());
  EXPECT_EQ(s.endpoint(), fmt::format("[::1]:{}", s.port()));
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(s.port());
  a.sin6_addr = in6addr_loopback;
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  std::string req = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  EXPECT_THAT(ReadAll(fd), StartsWith("HTTP/1.1 200"));
  ::close(fd);
}

TEST(HttpServerBindTest, StopWithoutStartAndTwiceIsFine) {
  HttpServer s({});
  s.Stop();
  ASSERT_TRUE(s.Start().ok());
  EXPECT_EQ(s.Start().code(), absl::StatusCode::kFailedPrecondition);
  s.Stop();
  s.Stop();
  EXPECT_EQ(Dial(s.port()), -1);  // the port is released
}

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
      {"cistern_quarantined_objects", "gauge"},
      {"cistern_quarantined_bytes", "gauge"},
      {"cistern_sessions", "gauge"},
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
