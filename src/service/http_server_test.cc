// The HTTP server of every Cistern binary's /metrics and /health, over loopback.
#include "src/service/http_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/raw_http.h"

namespace cistern::service {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using namespace cistern::testing_http;

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

}  // namespace
}  // namespace cistern::service
