#include "src/config/registry_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "src/config/daemon_config.h"

namespace cistern::config {
namespace {

using ::testing::HasSubstr;

const std::vector<std::string> kRequired = {"cluster_id=c1", "token=secret"};

std::vector<std::string> With(std::vector<std::string> more) {
  std::vector<std::string> all = kRequired;
  all.insert(all.end(), more.begin(), more.end());
  return all;
}

TEST(RegistryConfigTest, DefaultsAreValidOnceClusterAndTokenAreSet) {
  auto cfg = LoadRegistryConfig("", kRequired);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->port(), 7470u);
  EXPECT_EQ(cfg->listen_address(), "127.0.0.1");
  EXPECT_THAT(cfg->database(), HasSubstr("registry.db"));
  EXPECT_EQ(cfg->dead_after_ms(), 15000u);
}

TEST(RegistryConfigTest, ClusterIdAndTokenAreRequired) {
  EXPECT_THAT(LoadRegistryConfig("", {"token=x"}).status().message(), HasSubstr("cluster_id"));
  EXPECT_THAT(LoadRegistryConfig("", {"cluster_id=c"}).status().message(), HasSubstr("token"));
}

TEST(RegistryConfigTest, BadValuesNameTheKey) {
  struct Case {
    std::string set, key;
  };
  for (const Case& c : std::vector<Case>{
           {"cluster_id=a b", "cluster_id"},
           {"listen_address=localhost", "listen_address"},
           {"port=70000", "port"},
           {"tls.cert_file=/x.pem", "tls.cert_file and tls.key_file"},
           {"tls.client_ca_file=/ca.pem", "tls.client_ca_file"},
           {"state_dir=relative", "state_dir"},
           {"suspect_after_ms=1500", "suspect_after_ms"},
           {"dead_after_ms=5s", "dead_after_ms"},
           {"transfer_ttl_ms=10", "transfer_ttl_ms"},
           {"max_message_bytes=1KiB", "max_message_bytes"},
           {"database_max_bytes=1KiB", "database_max_bytes"},
           {"replica_grace_ms=8d", "replica_grace_ms"},
           {"unknown_key=1", "unknown_key"},
       }) {
    auto cfg = LoadRegistryConfig("", With({c.set}));
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << c.set;
    EXPECT_THAT(cfg.status().message(), HasSubstr(c.key)) << c.set;
  }
}

TEST(ClusterConfigTest, StandaloneByDefaultWithAHostId) {
  auto cfg = LoadDaemonConfig("", {});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_TRUE(cfg->cluster().registry().empty());
  EXPECT_FALSE(cfg->host_id().empty());
  EXPECT_LE(cfg->host_id().size(), 64u);
}

TEST(ClusterConfigTest, JoiningNeedsClusterTokenAndAdvertise) {
  std::vector<std::string> ok = {"cluster.registry=127.0.0.1:7470", "cluster.cluster_id=c1",
                                 "cluster.token=s", "cluster.advertise=10.0.0.1:7471",
                                 "host_id=h1"};
  ASSERT_TRUE(LoadDaemonConfig("", ok).ok()) << LoadDaemonConfig("", ok).status();
  for (size_t drop = 1; drop < 4; ++drop) {
    std::vector<std::string> missing = ok;
    std::string key = missing[drop].substr(0, missing[drop].find('='));
    missing.erase(missing.begin() + drop);
    auto cfg = LoadDaemonConfig("", missing);
    EXPECT_THAT(cfg.status().message(), HasSubstr(key)) << key;
  }
  auto stray = LoadDaemonConfig("", {"cluster.token=s"});
  EXPECT_THAT(stray.status().message(), HasSubstr("cluster.registry is empty"));
  for (const std::string& bad :
       {std::string("cluster.registry=nohostport"), std::string("cluster.registry=h:0"),
        std::string("cluster.advertise=h:99999"), std::string("host_id=bad/id"),
        std::string("cluster.tls.cert_file=/c.pem"), std::string("cluster.transport_port=70000"),
        std::string("cluster.transport_port=7471"),
        std::string("cluster.tls.peer_server_name=daemon")}) {
    std::vector<std::string> v = ok;
    v.push_back(bad);
    auto cfg = LoadDaemonConfig("", v);
    EXPECT_EQ(cfg.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(cfg.status().message(), HasSubstr(bad.substr(0, bad.find('=')))) << bad;
  }
}

TEST(ClusterConfigTest, TheTransportPortIsFreeByDefaultAndNeverAdvertisesPort) {
  std::vector<std::string> ok = {"cluster.registry=127.0.0.1:7470", "cluster.cluster_id=c1",
                                 "cluster.token=s", "cluster.advertise=10.0.0.1:7471"};
  auto cfg = LoadDaemonConfig("", ok);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->cluster().transport_port(), 0u);
  ok.push_back("cluster.transport_port=7472");
  cfg = LoadDaemonConfig("", ok);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->cluster().transport_port(), 7472u);
  ok.back() = "cluster.transport_port=7471";
  EXPECT_THAT(LoadDaemonConfig("", ok).status().message(),
              HasSubstr("cluster.transport_port 7471 is cluster.advertise's port"));
}

TEST(ShippedConfigTest, ExampleRegistryAndClusterDaemonConfigsValidate) {
  std::string dir = std::string(CISTERN_SOURCE_DIR) + "/deploy/config/";
  auto reg = LoadRegistryConfig(dir + "cistern-registry.yaml", {});
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_EQ(reg->cluster_id(), "example-cluster");
  EXPECT_EQ(reg->port(), 7470u);
  auto daemon = LoadDaemonConfig(dir + "cisternd-cluster.yaml", {});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_EQ(daemon->cluster().cluster_id(), reg->cluster_id());
  EXPECT_EQ(daemon->cluster().token(), reg->token());
  EXPECT_EQ(daemon->cluster().registry(), "127.0.0.1:7470");
}

}  // namespace
}  // namespace cistern::config
