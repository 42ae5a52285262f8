// `cistern registry start|stop|status|logs`, `cistern system query` and
// `cistern locate` against a real cistern-registry in a temporary
// $CISTERN_HOME. Hosts are registered from this process with the gRPC client,
// as a daemon's cluster agent would.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/cluster/registry_client.h"
#include "src/common/paths.h"
#include "tests/integration/cli_home.h"
#include "tests/integration/daemon_harness.h"
#include "tests/util/test_certs.h"

namespace cistern::testing {
namespace {

namespace fs = std::filesystem;
namespace v1 = cluster::v1;
using ::testing::HasSubstr;

// Running and not a zombie waiting for init to reap it.
bool Running(int pid) {
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close = line.rfind(')');
  return close != std::string::npos && line.size() > close + 2 && line[close + 2] != 'Z';
}

// The pids of live processes whose command line mentions `needle`.
std::vector<int> ProcessesMentioning(const std::string& needle) {
  std::vector<int> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    int pid = std::stoi(name);
    if (pid == getpid() || !Running(pid)) continue;
    std::string cmdline = ReadFile((e.path() / "cmdline").string());
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    if (cmdline.find(needle) != std::string::npos) out.push_back(pid);
  }
  return out;
}

class RegistryCliTest : public CliHomeTest {
 protected:
  using Result = CliResult;

  void SetUp() override {
    CliHomeTest::SetUp();
    // The registry built beside the CLI, and no config from the environment.
    ::unsetenv("CISTERN_REGISTRY_BIN");
    ::unsetenv("CISTERN_REGISTRY_CONFIG");
  }
  void TearDown() override {
    Run("registry stop --grace 5");
    CliHomeTest::TearDown();
  }

  // A registry of cluster c1 (token s3cret) on free ports, with liveness slow
  // enough that a registered host stays alive (and unknown after a restart)
  // for the whole test.
  static std::string RegistrySets() {
    return "--set cluster_id=c1 --set token=s3cret --set port=0 --set metrics_port=0 "
           "--set suspect_after_ms=10m --set dead_after_ms=20m ";
  }
  Result StartRegistry(const std::string& extra = "") {
    return Run("registry start " + RegistrySets() + extra);
  }

  // The registry session directories ($CISTERN_HOME/registry/sessions/*).
  std::vector<fs::path> RegistrySessions() const {
    std::vector<fs::path> out;
    std::error_code ec;
    for (auto& s : fs::directory_iterator(fs::path(home_) / "registry" / "sessions", ec)) {
      out.push_back(s.path());
    }
    return out;
  }

  // A client of the running registry (the endpoint `registry status` reports).
  std::unique_ptr<cluster::RegistryClient> Client() {
    auto status = JsonOf("registry status");
    std::string endpoint = status.value("endpoint", "");
    EXPECT_FALSE(endpoint.empty()) << status.dump();
    cluster::RegistryClientOptions o;
    o.address = endpoint;
    o.cluster_id = "c1";
    o.token = "s3cret";
    o.rpc_timeout = std::chrono::seconds(10);
    auto c = cluster::RegistryClient::Create(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Registers host h1 (incarnation 7, one tier) and publishes key "w"
  // generation 5 on it.
  void RegisterHost(cluster::RegistryClient* c) {
    v1::RegisterRequest reg;
    reg.set_host_id("h1");
    reg.set_advertise("h1.example:7471");
    reg.set_incarnation(7);
    auto* t = reg.add_tiers();
    t->set_name("ram");
    t->set_capacity_bytes(1 << 30);
    t->set_used_bytes(1 << 20);
    auto r = c->Register(reg);
    ASSERT_TRUE(r.ok()) << r.status();
    v1::PublishRequest pub;
    pub.set_host_id("h1");
    pub.set_incarnation(7);
    pub.set_seq(1);
    auto* rep = pub.add_added();
    rep->set_key("w");
    rep->set_generation(5);
    rep->set_tier("ram");
    rep->set_size(64);
    rep->set_checksum(0x23);
    rep->set_has_checksum(true);
    auto p = c->Publish(pub);
    ASSERT_TRUE(p.ok()) << p.status();
  }
};

TEST_F(RegistryCliTest, StartQueryRegisterLocateStopAndRestartKeepsTheCatalog) {
  Result start = StartRegistry();
  ASSERT_EQ(start.code, 0) << start.out;
  EXPECT_THAT(start.out, HasSubstr("cistern-registry started"));
  auto sessions = RegistrySessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_TRUE(fs::exists(sessions[0] / "config.yaml"));
  auto meta = nlohmann::json::parse(ReadFile((sessions[0] / "meta.json").string()), nullptr,
                                    /*allow_exceptions=*/false);
  ASSERT_TRUE(meta.is_object());
  int pid = meta.value("pid", 0);
  EXPECT_TRUE(Running(pid));
  EXPECT_THAT(meta.value("endpoint", ""), HasSubstr("127.0.0.1:"));
  EXPECT_EQ(ReadFile(home_ + "/registry/state/registry.endpoint"),
            meta.value("endpoint", "") + "\n");
  EXPECT_TRUE(fs::exists(home_ + "/registry/state/registry.db"));
  EXPECT_THAT(Run("registry logs").out, HasSubstr("ready on"));

  auto status = JsonOf("registry status");
  EXPECT_EQ(status["running"], true);
  EXPECT_EQ(status["healthy"], true);
  EXPECT_EQ(status["pid"], pid);
  EXPECT_EQ(status["health"], 200);
  ASSERT_TRUE(status["system"].is_object()) << status.dump();
  EXPECT_EQ(status["system"]["cluster_id"], "c1");
  EXPECT_EQ(status["system"]["hosts"].size(), 0u);
  EXPECT_EQ(status["hosts_by_state"]["alive"], 0);
  const uint64_t epoch = status["system"]["registry_epoch"];
  EXPECT_GE(epoch, 1u);
  std::string metrics = status["metrics"];
  ASSERT_THAT(metrics, HasSubstr("127.0.0.1:"));
  uint16_t metrics_port = static_cast<uint16_t>(std::stoi(metrics.substr(metrics.rfind(':') + 1)));
  EXPECT_EQ(HttpGet(metrics_port, "/health").status, 200);
  EXPECT_THAT(Run("registry status").out,
              HasSubstr("epoch " + std::to_string(epoch) + ": 0 hosts"));

  // Found through the local registry session.
  auto empty = JsonOf("system query");
  EXPECT_EQ(empty["cluster_id"], "c1");
  EXPECT_EQ(empty["registry_epoch"], epoch);
  EXPECT_EQ(empty["hosts"].size(), 0u);
  EXPECT_THAT(Run("system query").out, HasSubstr("no host has registered"));

  auto client = Client();
  ASSERT_NE(client, nullptr);
  RegisterHost(client.get());
  client.reset();
  Result query = Run("system query");
  ASSERT_EQ(query.code, 0) << query.out;
  EXPECT_THAT(query.out, HasSubstr("1 host,"));
  EXPECT_THAT(query.out, HasSubstr("h1"));
  EXPECT_THAT(query.out, HasSubstr("alive"));
  EXPECT_THAT(query.out, HasSubstr("h1.example:7471"));
  EXPECT_THAT(query.out, HasSubstr("ram 1.0 MiB/1.0 GiB"));
  EXPECT_THAT(query.out, HasSubstr("s ago"));  // a registration counts as a heartbeat
  auto hosts = JsonOf("system query");
  ASSERT_EQ(hosts["hosts"].size(), 1u) << hosts.dump();
  EXPECT_EQ(hosts["hosts"][0]["host_id"], "h1");
  EXPECT_EQ(hosts["hosts"][0]["state"], "HOST_STATE_ALIVE");
  EXPECT_EQ(hosts["hosts"][0]["incarnation"], 7);
  EXPECT_EQ(hosts["hosts"][0]["replicas"], 1);
  EXPECT_EQ(hosts["hosts"][0]["replica_bytes"], 64);
  EXPECT_TRUE(hosts["hosts"][0]["heartbeat_age_ms"].is_number());
  EXPECT_EQ(JsonOf("registry status")["hosts_by_state"]["alive"], 1);

  Result located = Run("locate w");
  ASSERT_EQ(located.code, 0) << located.out;
  EXPECT_THAT(located.out, HasSubstr("generation 5: 1 location"));
  EXPECT_THAT(located.out, HasSubstr("h1.example:7471"));
  EXPECT_THAT(located.out, HasSubstr("0000000000000023"));
  auto where = JsonOf("locate w --generation 5");
  EXPECT_EQ(where["generation"], 5);
  ASSERT_EQ(where["locations"].size(), 1u);
  EXPECT_EQ(where["locations"][0]["host_id"], "h1");
  EXPECT_EQ(where["locations"][0]["checksum"], "0000000000000023");
  Result unknown = Run("locate no/such/key");
  EXPECT_EQ(unknown.code, 1) << unknown.out;
  EXPECT_THAT(unknown.out, HasSubstr("no/such/key"));
  EXPECT_THAT(unknown.out, HasSubstr("no live replica"));
  EXPECT_EQ(Run("locate w --generation 6").code, 1);

  // One registry per home.
  Result again = StartRegistry();
  EXPECT_EQ(again.code, 1) << again.out;
  EXPECT_THAT(again.out, HasSubstr("already running"));
  EXPECT_EQ(RegistrySessions().size(), 1u);

  Result stop = Run("registry stop");
  ASSERT_EQ(stop.code, 0) << stop.out;
  EXPECT_THAT(stop.out, HasSubstr("cistern-registry stopped"));
  EXPECT_FALSE(Running(pid)) << "cistern-registry still running";
  Result after = Run("registry status");
  EXPECT_EQ(after.code, 1);
  EXPECT_THAT(after.out, HasSubstr("not running"));
  Result nowhere = Run("system query");
  EXPECT_EQ(nowhere.code, 1) << nowhere.out;
  EXPECT_THAT(nowhere.out, HasSubstr("no registry to ask"));
  EXPECT_THAT(nowhere.out, HasSubstr("--registry"));

  // The database outlives the session: the host is still known, as unknown
  // until it registers again, and the epoch grew by one.
  Result restart = StartRegistry();
  ASSERT_EQ(restart.code, 0) << restart.out;
  auto restarted = JsonOf("registry status");
  ASSERT_TRUE(restarted["system"].is_object()) << restarted.dump();
  EXPECT_EQ(restarted["system"]["registry_epoch"], epoch + 1);
  EXPECT_EQ(restarted["hosts_by_state"]["unknown"], 1);
  auto known = JsonOf("system query");
  ASSERT_EQ(known["hosts"].size(), 1u) << known.dump();
  EXPECT_EQ(known["hosts"][0]["host_id"], "h1");
  EXPECT_EQ(known["hosts"][0]["state"], "HOST_STATE_UNKNOWN");
  EXPECT_TRUE(known["hosts"][0]["heartbeat_age_ms"].is_null());
  Result listed = Run("system query");
  EXPECT_THAT(listed.out, HasSubstr("unknown"));
  EXPECT_THAT(listed.out, HasSubstr("never"));
  EXPECT_EQ(RegistrySessions().size(), 2u);
}

TEST_F(RegistryCliTest, ExplicitRegistryFlagsAndTheirErrors) {
  // The shipped example, with --set for what a test must change.
  const std::string example =
      std::string(CISTERN_SOURCE_DIR) + "/deploy/config/cistern-registry.yaml";
  Result start = StartRegistry("--config " + example);
  ASSERT_EQ(start.code, 0) << start.out;
  auto first = JsonOf("registry status");
  std::string endpoint = first["endpoint"];
  auto q =
      JsonOf(fmt::format("system query --registry {} --cluster-id c1 --token s3cret", endpoint));
  EXPECT_EQ(q["cluster_id"], "c1");

  Result no_id = Run(fmt::format("system query --registry {} --token s3cret", endpoint));
  EXPECT_EQ(no_id.code, 2) << no_id.out;
  EXPECT_THAT(no_id.out, HasSubstr("--cluster-id"));
  Result no_token = Run(fmt::format("system query --registry {} --cluster-id c1", endpoint));
  EXPECT_EQ(no_token.code, 2) << no_token.out;
  EXPECT_THAT(no_token.out, HasSubstr("--token"));
  Result wrong =
      Run(fmt::format("system query --registry {} --cluster-id c1 --token nope", endpoint));
  EXPECT_EQ(wrong.code, 1) << wrong.out;
  EXPECT_THAT(wrong.out, HasSubstr("registry " + endpoint));
  // The local session, with a flag that overrides what it found.
  Result other_cluster = Run("system query --cluster-id c2");
  EXPECT_EQ(other_cluster.code, 1) << other_cluster.out;
  EXPECT_THAT(other_cluster.out, HasSubstr("c2"));

  // Nothing listens there: the client's message, with where the address came from.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  std::string closed = fmt::format("127.0.0.1:{}", ntohs(a.sin_port));  // bound, not listening
  Result down = Run(fmt::format("locate w --registry {} --cluster-id c1 --token s3cret", closed));
  ::close(fd);
  EXPECT_EQ(down.code, 1) << down.out;
  EXPECT_THAT(down.out, HasSubstr("registry " + closed));
  EXPECT_THAT(down.out, HasSubstr("is cistern-registry running?"));

  // restart: a new session with the same config file, over the same database.
  Result restart = Run("registry restart " + RegistrySets());
  ASSERT_EQ(restart.code, 0) << restart.out;
  EXPECT_THAT(restart.out, HasSubstr("cistern-registry stopped"));
  EXPECT_THAT(restart.out, HasSubstr("cistern-registry started"));
  EXPECT_FALSE(Running(first["pid"].get<int>()));
  auto second = JsonOf("registry status");
  EXPECT_EQ(second["system"]["registry_epoch"],
            first["system"]["registry_epoch"].get<uint64_t>() + 1);
  auto sessions = RegistrySessions();
  ASSERT_EQ(sessions.size(), 2u);
  for (const fs::path& dir : sessions) {
    auto meta = nlohmann::json::parse(ReadFile((dir / "meta.json").string()), nullptr, false);
    EXPECT_EQ(meta.value("config", ""), example) << dir;
  }
}

TEST_F(RegistryCliTest, WithoutARegistrySessionTheDaemonSessionsClusterBlockIsUsed) {
  ASSERT_EQ(StartRegistry().code, 0);
  std::string endpoint = JsonOf("registry status")["endpoint"];
  // A daemon session whose config names the cluster (written here: the daemon
  // itself need not run for discovery).
  fs::path host = fs::path(home_) / "hosts" / paths::HostId();
  fs::create_directories(host / "sessions" / "s1");
  std::ofstream(host / "sessions" / "s1" / "config.yaml")
      << "cluster:\n  registry: '" << endpoint
      << "'\n  cluster_id: c1\n  token: s3cret\n  advertise: 'x:1'\n";
  std::ofstream(host / "current_session") << "s1\n";
  // The registry keeps running, but is no longer the current registry session.
  fs::path current = fs::path(home_) / "registry" / "current_session";
  std::string saved = ReadFile(current.string());
  fs::remove(current);
  auto q = JsonOf("system query");
  EXPECT_EQ(q["cluster_id"], "c1") << q.dump();
  Result wrong = Run("system query --token nope");
  EXPECT_EQ(wrong.code, 1) << wrong.out;
  EXPECT_THAT(wrong.out, HasSubstr("registry " + endpoint));
  // Neither source: the message names what was looked at.
  std::ofstream(host / "sessions" / "s1" / "config.yaml") << "host_id: h\n";
  Result none = Run("locate w");
  EXPECT_EQ(none.code, 1) << none.out;
  EXPECT_THAT(none.out, HasSubstr("no registry to ask"));
  EXPECT_THAT(none.out, HasSubstr("daemon session s1 is not in a cluster"));
  std::ofstream(current) << saved;  // for TearDown's stop
}

TEST_F(RegistryCliTest, ConfigErrorsExitNonZeroNamingTheKeyAndLeaveNoRegistry) {
  Result no_token = Run("registry start --set cluster_id=c1 --set port=0 --set metrics_port=0");
  EXPECT_EQ(no_token.code, 2) << no_token.out;
  EXPECT_THAT(no_token.out, HasSubstr("token is required"));
  EXPECT_EQ(Run("registry status").code, 1);
  EXPECT_TRUE(RegistrySessions().empty());

  std::string bad_key = home_ + "/bad.yaml";
  std::ofstream(bad_key) << "cluster_id: c1\ntoken: t\ncolour: blue\n";
  Result unknown = Run("registry start --config " + bad_key);
  EXPECT_EQ(unknown.code, 2) << unknown.out;
  EXPECT_THAT(unknown.out, HasSubstr("colour"));
  Result bad_set = Run("registry start " + RegistrySets() + "--set heartbeat_interval_ms=soon");
  EXPECT_EQ(bad_set.code, 2) << bad_set.out;
  EXPECT_THAT(bad_set.out, HasSubstr("heartbeat_interval_ms"));

  // What only the registry itself finds (its metrics port is taken): it exits
  // 2 during start, and the CLI passes that on with its last log lines.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  Result taken = StartRegistry(fmt::format("--set metrics_port={}", port));
  ::close(fd);
  EXPECT_EQ(taken.code, 2) << taken.out;
  EXPECT_THAT(taken.out, HasSubstr("exited during start"));
  EXPECT_THAT(taken.out, HasSubstr(fmt::format("port {} is already in use", port)));
  EXPECT_EQ(Run("registry status").code, 1);
  EXPECT_THAT(ProcessesMentioning(home_), ::testing::IsEmpty());
}

TEST_F(RegistryCliTest, Kill9LeavesAStaleSessionThatTheNextStartReplaces) {
  ASSERT_EQ(StartRegistry().code, 0);
  auto before = JsonOf("registry status");
  int pid = before["pid"];
  uint64_t epoch = before["system"]["registry_epoch"];
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(Eventually([&] { return !Running(pid); }));
  Result stale = Run("registry status");
  EXPECT_EQ(stale.code, 1);
  EXPECT_THAT(stale.out, HasSubstr("is gone"));
  Result start = StartRegistry();
  ASSERT_EQ(start.code, 0) << start.out;
  EXPECT_THAT(start.out, HasSubstr("replacing stale session"));
  auto after = JsonOf("registry status");
  EXPECT_EQ(after["healthy"], true);
  EXPECT_NE(after["pid"], pid);
  EXPECT_EQ(after["system"]["registry_epoch"], epoch + 1);
  EXPECT_EQ(RegistrySessions().size(), 2u);
}

TEST_F(RegistryCliTest, WithTlsReadinessIsHealthAndClientsTrustTheGivenCa) {
  auto certs = testing_tls::MakeTestCerts(home_ + "/certs");
  ASSERT_TRUE(certs.ok) << certs.error;
  Result start = StartRegistry(fmt::format("--set tls.cert_file={} --set tls.key_file={}",
                                           certs.server_cert, certs.server_key));
  ASSERT_EQ(start.code, 0) << start.out;
  EXPECT_THAT(start.out, HasSubstr("(TLS)"));
  // Without a CA it trusts, the CLI still sees the registry healthy (/health).
  auto health_only = JsonOf("registry status");
  EXPECT_EQ(health_only["healthy"], true) << health_only.dump();
  EXPECT_EQ(health_only["tls"], true);
  EXPECT_EQ(health_only["health"], 200);
  auto status = JsonOf("registry status --ca-file " + certs.ca);
  ASSERT_TRUE(status["system"].is_object()) << status.dump();
  EXPECT_EQ(status["system"]["cluster_id"], "c1");
  auto q = JsonOf("system query --ca-file " + certs.ca);
  EXPECT_EQ(q["cluster_id"], "c1") << q.dump();
  Result other = Run("system query --ca-file " + certs.other_ca);
  EXPECT_EQ(other.code, 1) << other.out;
  Result missing = Run("system query --ca-file " + home_ + "/missing.pem");
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_THAT(missing.out, HasSubstr("missing.pem"));
}

}  // namespace
}  // namespace cistern::testing
