// cistern-registry's gRPC service in process, over loopback: the auth guard,
// bad input on every call, the inventory stream, durability across a
// restart, the standard health service, TLS and mTLS.
#include "src/registryd/registry_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "src/cluster/registry_client.h"
#include "src/registry/sqlite_backend.h"
#include "tests/util/promtool.h"
#include "tests/util/test_certs.h"

namespace cistern::registryd {
namespace {

using ::testing::HasSubstr;
namespace v1 = registry::v1;

class RegistryServerTest : public ::testing::Test {
 protected:
  RegistryServerTest() : metrics_("test") {
    dir_ = ::testing::TempDir() + "/registry-server-" + std::to_string(getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    options_.catalog.cluster_id = "c1";
    options_.token = "s3cret";
    options_.max_entries_per_request = 4;
    options_.tick_interval = std::chrono::hours(1);  // ticks by hand
  }
  ~RegistryServerTest() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartServer(std::unique_ptr<registry::MetadataBackend> backend = nullptr) {
    if (backend == nullptr) {
      registry::SqliteOptions o;
      o.path = dir_ + "/registry.db";
      auto b = registry::OpenSqliteBackend(o);
      ASSERT_TRUE(b.ok()) << b.status();
      backend = std::move(*b);
    }
    auto s = RegistryServer::Start(options_, std::move(backend), &metrics_, &clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
  }

  std::unique_ptr<cluster::RegistryClient> Client(std::string cluster = "c1",
                                                  std::string token = "s3cret") {
    cluster::RegistryClientOptions o;
    o.address = "127.0.0.1:" + std::to_string(server_->port());
    o.cluster_id = std::move(cluster);
    o.token = std::move(token);
    o.rpc_timeout = std::chrono::seconds(10);
    return std::move(*cluster::RegistryClient::Create(o));
  }

  static v1::RegisterRequest Reg(const std::string& host, uint64_t incarnation = 1) {
    v1::RegisterRequest req;
    req.set_host_id(host);
    req.set_advertise(host + ":7471");
    req.set_incarnation(incarnation);
    auto* t = req.add_tiers();
    t->set_name("ram");
    t->set_capacity_bytes(1 << 30);
    return req;
  }

  static v1::Replica Rep(const std::string& key, uint64_t gen) {
    v1::Replica r;
    r.set_key(key);
    r.set_generation(gen);
    r.set_tier("ram");
    r.set_size(64);
    r.set_checksum(gen * 7);
    r.set_has_checksum(true);
    return r;
  }

  static v1::PublishRequest Pub(const std::string& host, uint64_t seq,
                                std::vector<v1::Replica> added) {
    v1::PublishRequest req;
    req.set_host_id(host);
    req.set_incarnation(1);
    req.set_seq(seq);
    for (auto& r : added) *req.add_added() = r;
    return req;
  }

  std::string dir_;
  FakeClock clock_;
  RegistryMetrics metrics_;
  RegistryServerOptions options_;
  std::unique_ptr<RegistryServer> server_;
};

TEST_F(RegistryServerTest, RegisterPublishLocateOverGrpc) {
  StartServer();
  auto c = Client();
  auto reg = c->Register(Reg("a"));
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_EQ(reg->host_number(), 1u);
  ASSERT_TRUE(c->Publish(Pub("a", 1, {Rep("w", 5)})).ok());
  v1::LocateRequest loc;
  loc.set_key("w");
  auto r = c->Locate(loc);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generation(), 5u);
  EXPECT_EQ(r->locations(0).advertise(), "a:7471");
  auto q = c->QuerySystem();
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->cluster_id(), "c1");
  EXPECT_EQ(q->hosts_size(), 1);
  EXPECT_EQ(q->replicas(), 1u);
}

TEST_F(RegistryServerTest, WrongClusterIdOrTokenIsRefusedAndChangesNothing) {
  StartServer();
  auto other = Client("c2");
  auto r = other->Register(Reg("a"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("cluster 'c2'"));
  EXPECT_THAT(r.status().message(), HasSubstr("serves cluster 'c1'"));
  auto wrong = Client("c1", "guess");
  r = wrong->Register(Reg("a"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status().message(), HasSubstr("token"));
  auto none = Client("c1", "");
  EXPECT_EQ(none->QuerySystem().status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(wrong->QuerySystem().status().code(), absl::StatusCode::kPermissionDenied);
  auto q = Client()->QuerySystem();
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->hosts_size(), 0);
  EXPECT_THAT(metrics_.Scrape(),
              HasSubstr("cistern_registry_auth_failures_total{reason=\"token\"} 3"));
}

TEST_F(RegistryServerTest, BadInputOnEveryCallGetsAClearStatus) {
  StartServer();
  auto c = Client();
  ASSERT_TRUE(c->Register(Reg("a")).ok());
  ASSERT_TRUE(c->Publish(Pub("a", 1, {Rep("k", 1)})).ok());
  auto before = c->QuerySystem()->SerializeAsString();
  auto code = [](const auto& r) { return r.status().code(); };
  v1::RegisterRequest reg = Reg("a/b");
  EXPECT_EQ(code(c->Register(reg)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(c->Register(Reg("a", 0))), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(c->Publish(Pub("a", 2, {Rep("", 1)}))), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(c->Publish(Pub("a", 2, {Rep("k", 0)}))), absl::StatusCode::kInvalidArgument);
  auto big =
      c->Publish(Pub("a", 2, {Rep("1", 1), Rep("2", 1), Rep("3", 1), Rep("4", 1), Rep("5", 1)}));
  EXPECT_EQ(code(big), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("max_entries_per_request 4"));
  EXPECT_EQ(code(c->Publish(Pub("nobody", 1, {Rep("k", 1)}))), absl::StatusCode::kNotFound);
  EXPECT_EQ(code(c->Publish(Pub("a", 5, {Rep("k", 2)}))), absl::StatusCode::kFailedPrecondition);
  v1::HeartbeatRequest hb;
  hb.set_host_id("a");
  hb.set_incarnation(9);
  EXPECT_EQ(code(c->Heartbeat(hb)), absl::StatusCode::kFailedPrecondition);
  v1::LocateRequest loc;
  loc.set_key(std::string(2000, 'k'));
  EXPECT_EQ(code(c->Locate(loc)), absl::StatusCode::kInvalidArgument);
  loc.set_key("k");
  loc.set_generation(2);
  EXPECT_EQ(code(c->Locate(loc)), absl::StatusCode::kNotFound);
  v1::ClaimTransferRequest claim;
  claim.set_key("k");
  claim.set_target_host("ghost");
  EXPECT_EQ(code(c->ClaimTransfer(claim)), absl::StatusCode::kNotFound);
  v1::CompleteTransferRequest done;
  done.set_claim_id(12345);
  EXPECT_EQ(c->CompleteTransfer(done).code(), absl::StatusCode::kNotFound);
  v1::DeregisterRequest dereg;
  dereg.set_host_id("a");
  dereg.set_incarnation(2);
  EXPECT_EQ(code(c->Deregister(dereg)), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->QuerySystem()->SerializeAsString(), before);
}

TEST_F(RegistryServerTest, InventoryStreamReconcilesAndATruncatedOneIsAborted) {
  StartServer();
  auto c = Client();
  ASSERT_TRUE(c->Register(Reg("a")).ok());
  ASSERT_TRUE(c->Publish(Pub("a", 1, {Rep("old", 1)})).ok());
  int sent = 0;
  auto sync = c->SyncInventory(
      [&](v1::InventoryChunk* chunk) {
        if (sent == 3) return false;
        chunk->set_host_id("a");
        chunk->set_incarnation(1);
        for (int i = 0; i < 4; ++i)
          *chunk->add_replicas() = Rep("k" + std::to_string(sent * 4 + i), 2);
        chunk->set_last(++sent == 3);
        chunk->set_publish_seq(9);
        return true;
      },
      3);
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ(sync->report().added(), 12u);
  EXPECT_EQ(sync->report().removed(), 1u);
  EXPECT_EQ(sync->registry_version().publish_seq(), 9u);
  EXPECT_EQ(c->QuerySystem()->replicas(), 12u);

  sent = 0;
  auto cut = c->SyncInventory(
      [&](v1::InventoryChunk* chunk) {
        if (sent++ == 1) return false;
        chunk->set_host_id("a");
        chunk->set_incarnation(1);
        *chunk->add_replicas() = Rep("k0", 2);
        return true;
      },
      1);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(c->QuerySystem()->replicas(), 12u);  // nothing removed by a sync that did not end
}

TEST_F(RegistryServerTest, AcknowledgedRegistrationsSurviveARestart) {
  StartServer();
  uint64_t epoch = server_->epoch();
  {
    auto c = Client();
    ASSERT_TRUE(c->Register(Reg("a")).ok());
    ASSERT_TRUE(c->Register(Reg("b")).ok());
    ASSERT_TRUE(c->Publish(Pub("a", 1, {Rep("k", 3), Rep("j", 4)})).ok());
  }
  server_.reset();
  StartServer();
  EXPECT_EQ(server_->epoch(), epoch + 1);
  auto q = Client()->QuerySystem();
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->hosts_size(), 2);
  EXPECT_EQ(q->hosts(0).state(), v1::HOST_STATE_UNKNOWN);
  EXPECT_EQ(q->replicas(), 2u);
  EXPECT_EQ(q->registry_epoch(), epoch + 1);
}

TEST_F(RegistryServerTest, ADatabaseThatCannotBeWrittenFailsCallsAndMemoryStaysBehind) {
  auto backend = std::make_unique<registry::MemoryBackend>();
  registry::MemoryBackend* mem = backend.get();
  StartServer(std::move(backend));
  auto c = Client();
  ASSERT_TRUE(c->Register(Reg("a")).ok());
  mem->FailWritesForTest(absl::UnavailableError("disk full"));
  auto r = c->Register(Reg("b"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("disk full"));
  EXPECT_EQ(c->Publish(Pub("a", 1, {Rep("k", 1)})).status().code(), absl::StatusCode::kUnavailable);
  auto q = c->QuerySystem();
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->hosts_size(), 1);
  EXPECT_EQ(q->replicas(), 0u);
  EXPECT_THAT(metrics_.Scrape(), HasSubstr("cistern_registry_group_commit_failures_total 2"));
  mem->FailWritesForTest(absl::OkStatus());
  EXPECT_TRUE(c->Publish(Pub("a", 1, {Rep("k", 1)})).ok());
}

TEST_F(RegistryServerTest, LivenessOverGrpc) {
  options_.catalog.suspect_after = std::chrono::seconds(2);
  options_.catalog.dead_after = std::chrono::seconds(4);
  StartServer();
  auto c = Client();
  ASSERT_TRUE(c->Register(Reg("a")).ok());
  ASSERT_TRUE(c->Publish(Pub("a", 1, {Rep("k", 1)})).ok());
  clock_.Advance(std::chrono::seconds(5));
  ASSERT_TRUE(server_->TickForTest().ok());
  EXPECT_EQ(c->QuerySystem()->hosts(0).state(), v1::HOST_STATE_DEAD);
  v1::LocateRequest loc;
  loc.set_key("k");
  EXPECT_EQ(c->Locate(loc).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(metrics_.Scrape(), HasSubstr("cistern_registry_hosts{state=\"dead\"} 1"));
}

TEST_F(RegistryServerTest, StandardHealthServiceAnswersServing) {
  StartServer();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                     grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);  // HealthCheckRequest{service: ""}
  grpc::ByteBuffer response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
}

TEST_F(RegistryServerTest, APortInUseIsRefused) {
  StartServer();
  options_.port = server_->port();
  auto second =
      RegistryServer::Start(options_, std::make_unique<registry::MemoryBackend>(), &metrics_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr(std::to_string(server_->port())));
}

TEST_F(RegistryServerTest, MetricsPassPromtoolAndNameEveryDocumentedFamily) {
  StartServer();
  auto c = Client();
  ASSERT_TRUE(c->Register(Reg("a")).ok());
  ASSERT_TRUE(c->Publish(Pub("a", 1, {Rep("k", 1)})).ok());
  (void)Client("c1", "bad")->QuerySystem();
  std::string text = metrics_.Scrape();
  testing::PromtoolResult lint = testing::PromtoolCheck(text);
  EXPECT_EQ(lint.exit_code, 0) << lint.output;
  EXPECT_EQ(lint.output, "");
  for (const char* family : {"cistern_registry_requests_total",
                             "cistern_registry_request_duration_seconds",
                             "cistern_registry_auth_failures_total",
                             "cistern_registry_group_commits_total",
                             "cistern_registry_group_commit_requests_total",
                             "cistern_registry_group_commit_failures_total",
                             "cistern_registry_group_commit_duration_seconds",
                             "cistern_registry_hosts",
                             "cistern_registry_replicas",
                             "cistern_registry_keys",
                             "cistern_registry_transfers_in_flight",
                             "cistern_registry_epoch",
                             "cistern_registry_generation_floor",
                             "cistern_registry_reconciled_replicas_total",
                             "cistern_registry_conflicts_total",
                             "cistern_registry_hosts_suspected_total",
                             "cistern_registry_hosts_died_total",
                             "cistern_registry_replicas_dropped_total",
                             "cistern_registry_transfer_claims_refused_total",
                             "cistern_registry_transfer_claims_expired_total",
                             "cistern_registry_start_time_seconds",
                             "cistern_registry_build_info"}) {
    EXPECT_THAT(text, HasSubstr(std::string("# TYPE ") + family + " ")) << family;
  }
  EXPECT_THAT(text, HasSubstr("cistern_registry_requests_total{code=\"ok\",method=\"Publish\"} 1"));
  EXPECT_THAT(text, HasSubstr("cistern_registry_replicas 1"));
  EXPECT_EQ(metrics_.HealthPage().status, 503);  // main() marks it ready
  metrics_.set_ready(true);
  EXPECT_EQ(metrics_.HealthPage().status, 200);
}

class RegistryTlsTest : public RegistryServerTest {
 protected:
  void SetUp() override {
    certs_ = testing_tls::MakeTestCerts(dir_ + "/certs");
    ASSERT_TRUE(certs_.ok) << certs_.error;
    options_.tls_cert_pem = testing_tls::TestCerts::Read(certs_.server_cert);
    options_.tls_key_pem = testing_tls::TestCerts::Read(certs_.server_key);
  }

  absl::Status Call(std::string ca, std::string cert = "", std::string key = "") {
    cluster::RegistryClientOptions o;
    // The address the server listens on, and the name its certificate
    // carries: "localhost:port" could reach another process's listener on
    // [::1]:port first when tests run in parallel.
    o.address = "127.0.0.1:" + std::to_string(server_->port());
    o.server_name = "localhost";
    o.cluster_id = "c1";
    o.token = "s3cret";
    o.ca_file = std::move(ca);
    o.cert_file = std::move(cert);
    o.key_file = std::move(key);
    o.rpc_timeout = std::chrono::seconds(5);
    auto c = cluster::RegistryClient::Create(o);
    if (!c.ok()) return c.status();
    return (*c)->QuerySystem().status();
  }

  testing_tls::TestCerts certs_;
};

TEST_F(RegistryTlsTest, TlsClientsThatTrustTheCaAreServedAndOthersAreNot) {
  StartServer();
  EXPECT_TRUE(Call(certs_.ca).ok());
  EXPECT_EQ(Call(certs_.other_ca).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Call("").code(), absl::StatusCode::kUnavailable);  // plaintext to a TLS port
  EXPECT_EQ(Call(dir_ + "/missing.pem").code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTlsTest, MutualTlsNeedsAClientCertificateFromTheCa) {
  options_.tls_client_ca_pem = testing_tls::TestCerts::Read(certs_.ca);
  StartServer();
  EXPECT_TRUE(Call(certs_.ca, certs_.client_cert, certs_.client_key).ok());
  EXPECT_EQ(Call(certs_.ca).code(), absl::StatusCode::kUnavailable);
  // A certificate the CA did not sign (the server's own is signed, so use
  // the other CA's self-signed one with the wrong key: refused either way).
  EXPECT_NE(Call(certs_.ca, certs_.other_ca, certs_.client_key).code(), absl::StatusCode::kOk);
}

}  // namespace
}  // namespace cistern::registryd
