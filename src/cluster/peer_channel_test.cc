// The daemons' control channel: who may call, and over what. A caller
// without the cluster's token or id is refused before the handler runs; with
// the daemons' certificates the channel is mutual TLS, and a caller without a
// certificate of the cluster's CA (or a server without one) gets nothing.
#include "src/cluster/peer_channel.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_certs.h"

namespace cistern::cluster {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

PeerChannelOptions Plain(std::string token = "s3cret", std::string cluster = "c1") {
  PeerChannelOptions o;
  o.cluster_id = std::move(cluster);
  o.token = std::move(token);
  return o;
}

// A server whose handler answers a Progress of region R with available R,
// and refuses region 0 as NOT_FOUND; it counts the calls it saw.
class Echo {
 public:
  explicit Echo(const PeerChannelOptions& options) {
    auto s = PeerControlServer::Start(
        "127.0.0.1:0", options,
        [this](const pv1::PeerRequest& r) -> absl::StatusOr<pv1::PeerReply> {
          ++calls_;
          if (r.progress().region() == 0) {
            return absl::NotFoundError("region 0 is not open");
          }
          pv1::PeerReply reply;
          reply.mutable_progress()->set_available(r.progress().region());
          return reply;
        });
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) server_ = std::move(*s);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  int calls() const { return calls_; }
  PeerControlServer& server() { return *server_; }

 private:
  std::unique_ptr<PeerControlServer> server_;
  std::atomic<int> calls_{0};
};

pv1::PeerRequest Progress(uint64_t region) {
  pv1::PeerRequest req;
  req.mutable_progress()->set_region(region);
  return req;
}

absl::StatusOr<pv1::PeerReply> CallWith(const PeerChannelOptions& o, const std::string& address,
                                        uint64_t region, std::chrono::milliseconds timeout = 5s) {
  auto client = PeerControlClient::Create(o);
  if (!client.ok()) return client.status();
  return (*client)->Call(address, Progress(region), timeout);
}

TEST(PeerChannelTest, TheHandlerAnswersCallersWithTheClustersIdAndToken) {
  Echo echo(Plain());
  auto r = CallWith(Plain(), echo.address(), 42);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->progress().available(), 42u);
  // The handler's verdict comes back with its code, naming the peer.
  auto refused = CallWith(Plain(), echo.address(), 0);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(refused.status().message(), HasSubstr("region 0 is not open"));
  EXPECT_THAT(refused.status().message(), HasSubstr(echo.address()));
  EXPECT_EQ(echo.calls(), 2);
}

TEST(PeerChannelTest, AWrongTokenOrClusterIsRefusedBeforeTheHandlerRuns) {
  Echo echo(Plain());
  auto wrong_token = CallWith(Plain("guess"), echo.address(), 1);
  EXPECT_EQ(wrong_token.status().code(), absl::StatusCode::kPermissionDenied)
      << wrong_token.status();
  EXPECT_THAT(wrong_token.status().message(), HasSubstr("wrong cluster token"));
  auto no_token = CallWith(Plain(""), echo.address(), 1);
  EXPECT_EQ(no_token.status().code(), absl::StatusCode::kPermissionDenied) << no_token.status();
  auto other = CallWith(Plain("s3cret", "c2"), echo.address(), 1);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition) << other.status();
  EXPECT_THAT(other.status().message(), HasSubstr("'c2'"));
  EXPECT_THAT(other.status().message(), HasSubstr("'c1'"));
  EXPECT_EQ(echo.calls(), 0);
}

TEST(PeerChannelTest, NobodyListeningIsUnavailableAndATakenPortIsRefused) {
  auto none = CallWith(Plain(), "127.0.0.1:1", 1, 2s);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable) << none.status();
  Echo echo(Plain());
  auto again = PeerControlServer::Start(echo.address(), Plain(),
                                        [](const pv1::PeerRequest&) { return pv1::PeerReply(); });
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
  EXPECT_THAT(again.status().message(), HasSubstr(echo.address()));
}

class PeerChannelTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("cistern-peer-tls-" + std::to_string(::getpid()));
    certs_ = testing_tls::MakeTestCerts(dir_.string());
    ASSERT_TRUE(certs_.ok) << certs_.error;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  PeerChannelOptions Daemon(const std::string& cert, const std::string& key,
                            const std::string& ca) {
    PeerChannelOptions o = Plain();
    o.ca_file = ca;
    o.cert_file = cert;
    o.key_file = key;
    return o;
  }
  PeerChannelOptions Member() { return Daemon(certs_.peer_cert, certs_.peer_key, certs_.ca); }

  std::filesystem::path dir_;
  testing_tls::TestCerts certs_;
};

TEST_F(PeerChannelTlsTest, DaemonsWithTheClustersCertificatesTalk) {
  Echo echo(Member());
  auto r = CallWith(Member(), echo.address(), 7);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->progress().available(), 7u);
  // The certificate carries localhost too: a peer_server_name picks it.
  PeerChannelOptions named = Member();
  named.peer_server_name = "localhost";
  EXPECT_TRUE(CallWith(named, echo.address(), 7).ok());
  // A name the certificate lacks is refused.
  named.peer_server_name = "h9.example";
  EXPECT_FALSE(CallWith(named, echo.address(), 7, 2s).ok());
  EXPECT_EQ(echo.calls(), 2);
}

TEST_F(PeerChannelTlsTest, ACallerWithoutAClusterCertificateGetsNothing) {
  Echo echo(Member());
  // Plaintext to a TLS port: no handshake, no call.
  EXPECT_EQ(CallWith(Plain(), echo.address(), 1, 2s).status().code(),
            absl::StatusCode::kUnavailable);
  // A certificate of another CA (a stranger with the token): refused.
  auto stranger =
      CallWith(Daemon(certs_.stranger_cert, certs_.stranger_key, certs_.ca), echo.address(), 1, 2s);
  EXPECT_EQ(stranger.status().code(), absl::StatusCode::kUnavailable) << stranger.status();
  // A caller that trusts another CA does not talk to this server either.
  auto distrust =
      CallWith(Daemon(certs_.peer_cert, certs_.peer_key, certs_.other_ca), echo.address(), 1, 2s);
  EXPECT_EQ(distrust.status().code(), absl::StatusCode::kUnavailable) << distrust.status();
  EXPECT_EQ(echo.calls(), 0);
  // And TLS does not replace the token.
  PeerChannelOptions no_token = Member();
  no_token.token = "guess";
  EXPECT_EQ(CallWith(no_token, echo.address(), 1).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(echo.calls(), 0);
}

TEST_F(PeerChannelTlsTest, AMissingCertificateFileIsNamed) {
  PeerChannelOptions o = Member();
  o.key_file = (dir_ / "absent.key").string();
  auto server = PeerControlServer::Start("127.0.0.1:0", o,
                                         [](const pv1::PeerRequest&) { return pv1::PeerReply(); });
  EXPECT_EQ(server.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(server.status().message(), HasSubstr("cluster.tls.key_file"));
  auto client = PeerControlClient::Create(o);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(client.status().message(), HasSubstr("absent.key"));
}

}  // namespace
}  // namespace cistern::cluster
