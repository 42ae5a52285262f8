// Simulated hosts: each cisternd in its own network namespace, joined to the
// others by a veth pair to a bridge (scripts/cluster-sim, addresses in
// 198.18.0.0/15), the registry on the bridge in this namespace. Pulls cross
// the veths; a partition is a veth taken down. Needs root (CAP_NET_ADMIN):
// without it the fixture fails and says so.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <set>

#include "fmt/format.h"
#include "tests/cluster/registry_harness.h"
#include "tests/integration/daemon_harness.h"

namespace cistern::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// One binary at a time uses this prefix and subnet; net-up first removes
// whatever a crashed earlier run left under the prefix.
constexpr char kPrefix[] = "cstt";
constexpr char kSubnet[] = "198.18.2";
constexpr int kHosts = 3;

int Sim(const std::string& args) {
  std::string cmd = fmt::format("{}/scripts/cluster-sim {}", CISTERN_SOURCE_DIR, args);
  return std::system(cmd.c_str());
}

class NetnsTest : public ::testing::Test {
 protected:
  NetnsTest()
      : registry_("sim-cluster", "sim-token",
                  {"heartbeat_interval_ms=100", "suspect_after_ms=400", "dead_after_ms=1200",
                   "replica_grace_ms=2s", fmt::format("listen_address={}.1", kSubnet)}) {}

  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "simulated hosts need root (network namespaces, veth pairs)";
    ASSERT_EQ(Sim(fmt::format("net-up {} {} {}", kPrefix, kHosts, kSubnet)), 0);
    // The daemons inherit it: bytes cross the veths over TCP, never through
    // the shared memory UCX would otherwise pick between processes of one
    // machine.
    ::setenv("UCX_TLS", "tcp", 1);
    std::string err;
    ASSERT_TRUE(registry_.Start(&err)) << err;
    for (int i = 1; i <= kHosts; ++i) {
      DaemonSpec spec;
      spec.netns = fmt::format("{}h{}", kPrefix, i);
      spec.extra_yaml =
          registry_.DaemonYaml(fmt::format("h{}", i), fmt::format("{}.{}:7471", kSubnet, 10 + i));
      hosts_.push_back(std::make_unique<Daemon>(spec));
      ASSERT_TRUE(hosts_.back()->Start({}, &err)) << err;
    }
  }

  // Runs after a failed test too: every daemon, namespace and link goes.
  void TearDown() override {
    hosts_.clear();
    EXPECT_EQ(Sim(fmt::format("net-down {}", kPrefix)), 0);
  }

  Daemon& host(int i) { return *hosts_[i - 1]; }

  std::set<std::string> Holders(const std::string& key) {
    registry::v1::LocateRequest req;
    req.set_key(key);
    auto r = registry_.Client()->Locate(req);
    std::set<std::string> out;
    if (!r.ok()) return out;
    for (const auto& l : r->locations()) out.insert(l.host_id());
    return out;
  }

  static std::string Pattern(size_t n, uint32_t seed) {
    std::string s(n, '\0');
    uint32_t x = seed * 2654435761u + 1;
    for (auto& ch : s) {
      x = x * 1664525u + 1013904223u;
      ch = static_cast<char>(x >> 24);
    }
    return s;
  }

  uint64_t PutPublished(int i, const std::string& key, const std::string& value) {
    auto c = host(i).Connect();
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return 0;
    PutOptions o;
    o.wait_published = 10s;
    auto r = (*c)->Put(key, std::string_view(value), o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->generation : 0;
  }

  Registry registry_;
  std::vector<std::unique_ptr<Daemon>> hosts_;
};

TEST_F(NetnsTest, AnObjectPutOnOneHostIsPulledAcrossTheVethsByEveryOther) {
  std::string value = Pattern(32 << 20, 7);
  uint64_t gen = PutPublished(1, "model", value);
  ASSERT_NE(gen, 0u);
  for (int i = 2; i <= kHosts; ++i) {
    auto c = host(i).Connect();
    ASSERT_TRUE(c.ok());
    auto v = (*c)->Get("model");
    ASSERT_TRUE(v.ok()) << v.status() << "\n" << host(i).Log();
    EXPECT_EQ(v->generation(), gen);
    ASSERT_EQ(v->size(), value.size());
    EXPECT_EQ(std::memcmp(v->data(), value.data(), value.size()), 0);
  }
  ASSERT_TRUE(Eventually([&] { return Holders("model").size() == kHosts; }));
}

TEST_F(NetnsTest, APartitionedSourceFailsThePullCleanlyAndHealingServesIt) {
  std::string value = Pattern(8 << 20, 8);
  ASSERT_NE(PutPublished(1, "k", value), 0u);
  ASSERT_EQ(Sim(fmt::format("partition {} 1", kPrefix)), 0);
  auto c = host(2).Connect();
  ASSERT_TRUE(c.ok());
  GetOptions o;
  o.deadline = 2s;
  auto v = (*c)->Get("k", o);
  ASSERT_FALSE(v.ok());
  EXPECT_THAT(v.status().code(), AnyOf(absl::StatusCode::kDeadlineExceeded,
                                       absl::StatusCode::kUnavailable, absl::StatusCode::kNotFound))
      << v.status();
  EXPECT_THAT(v.status().message(), HasSubstr("'k'"));
  auto stats = (*c)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->objects(), 0u);  // nothing torn, nothing kept
  EXPECT_EQ(stats->pending_writes(), 0u);
  ASSERT_EQ(Sim(fmt::format("heal {} 1", kPrefix)), 0);
  o.deadline = 10s;
  ASSERT_TRUE(Eventually([&] {
    auto got = (*c)->Get("k", o);
    return got.ok() && got->size() == value.size() &&
           std::memcmp(got->data(), value.data(), value.size()) == 0;
  })) << host(2).Log();
}

}  // namespace
}  // namespace cistern::testing
