// Simulated hosts: each cisternd in its own network namespace, joined to the
// others by a veth pair to a bridge (scripts/cluster-sim, addresses in
// 198.18.0.0/15), the registry on the bridge in this namespace. Pulls cross
// the veths; a partition is a veth taken down. Needs root (CAP_NET_ADMIN):
// without it the fixture fails and says so.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <future>
#include <set>

#include "cistern/peer.pb.h"
#include "fmt/format.h"
#include "src/cluster/peer_channel.h"
#include "src/transport/ucx_transport.h"
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
// A chunk read that takes longer gives its source up: short, so that a cut
// link is noticed well inside a test's deadline.
constexpr int kStallMs = 3000;
// Slow enough (a puller's link capped with `cluster-sim rate`) that a 64 MiB
// pull takes over a second, so it can be cut in the middle.
constexpr int kSlowMbit = 400;
constexpr std::chrono::seconds kPullDeadline{30};

int Sim(const std::string& args) {
  std::string cmd = fmt::format("{}/scripts/cluster-sim {}", CISTERN_SOURCE_DIR, args);
  return std::system(cmd.c_str());
}

class NetnsTest : public ::testing::Test {
 protected:
  explicit NetnsTest(int hosts = kHosts)
      : hosts_wanted_(hosts),
        registry_("sim-cluster", "sim-token",
                  {"heartbeat_interval_ms=100", "suspect_after_ms=400", "dead_after_ms=1200",
                   "replica_grace_ms=2s", fmt::format("listen_address={}.1", kSubnet)}) {}

  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "simulated hosts need root (network namespaces, veth pairs)";
    ASSERT_EQ(Sim(fmt::format("net-up {} {} {}", kPrefix, hosts_wanted_, kSubnet)), 0);
    // The daemons inherit it: bytes cross the veths over TCP, never through
    // the shared memory UCX would otherwise pick between processes of one
    // machine.
    ::setenv("UCX_TLS", "tcp", 1);
    std::string err;
    ASSERT_TRUE(registry_.Start(&err)) << err;
    for (int i = 1; i <= hosts_wanted_; ++i) {
      DaemonSpec spec;
      spec.netns = fmt::format("{}h{}", kPrefix, i);
      spec.tier_bytes = 256 << 20;
      spec.extra_yaml = registry_.DaemonYaml(fmt::format("h{}", i), Advertise(i)) +
                        fmt::format("  pull_stall_timeout_ms: {}\n", kStallMs);
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
  static std::string Advertise(int i) { return fmt::format("{}.{}:7471", kSubnet, 10 + i); }

  DaemonStats Stats(int i) {
    auto c = host(i).Connect();
    if (!c.ok()) return {};
    auto s = (*c)->Stats();
    return s.ok() ? *s : DaemonStats();
  }
  uint64_t UsedBytes(int i) {
    uint64_t used = 0;
    DaemonStats stats = Stats(i);
    for (const auto& t : stats.tiers()) used += t.used_bytes();
    return used;
  }
  wire::ClusterStatus Cluster(int i) {
    auto c = host(i).Connect();
    if (!c.ok()) return {};
    auto s = (*c)->Status();
    return s.ok() ? s->cluster() : wire::ClusterStatus();
  }

  // A get on host i whose bytes must equal `value`: OK, the get's error, or
  // DataLoss when the bytes differ.
  absl::Status GetVerified(int i, const std::string& key, const std::string& value,
                           GetOptions o = {}) {
    auto c = host(i).Connect();
    if (!c.ok()) return c.status();
    auto v = (*c)->Get(key, o);
    if (!v.ok()) return v.status();
    if (v->size() != value.size() || std::memcmp(v->data(), value.data(), value.size()) != 0) {
      return absl::DataLossError(fmt::format("host {} serves other bytes for '{}'", i, key));
    }
    return absl::OkStatus();
  }
  std::future<absl::Status> GetVerifiedAsync(int i, const std::string& key,
                                             const std::string& value, GetOptions o) {
    return std::async(std::launch::async, [=, this] { return GetVerified(i, key, value, o); });
  }

  // True once host i has reserved a block for a pull (its bytes are arriving).
  bool WaitPulling(int i) {
    return Eventually([&] { return Stats(i).pending_writes() > 0; });
  }

  // `value` under `key` on h1 and, pulled, on h3: two replicas.
  void PutWithSecondReplica(const std::string& key, const std::string& value) {
    ASSERT_NE(PutPublished(1, key, value), 0u);
    ASSERT_TRUE(GetVerified(3, key, value).ok());
    ASSERT_TRUE(Eventually([&] { return Holders(key).size() == 2; }));
  }

  // A get of `key` on h2 with h2's link slowed, returned once the pull is
  // under way (its block reserved, some chunks landed).
  std::future<absl::Status> StartSlowPull(const std::string& key, const std::string& value,
                                          const std::string& prefer = "") {
    EXPECT_EQ(Sim(fmt::format("rate {} 2 {}", kPrefix, kSlowMbit)), 0);
    GetOptions o;
    o.prefer_host = prefer;
    o.deadline = kPullDeadline;
    auto pull = GetVerifiedAsync(2, key, value, o);
    EXPECT_TRUE(WaitPulling(2));
    std::this_thread::sleep_for(200ms);
    return pull;
  }

  // Nothing torn on host i: no write pending, and exactly `objects` sealed
  // objects (the tests verify their bytes with GetVerified).
  void ExpectNothingTorn(int i, uint64_t objects) {
    auto st = Stats(i);
    EXPECT_EQ(st.pending_writes(), 0u) << "host " << i;
    EXPECT_EQ(st.objects(), objects) << "host " << i;
  }

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

  const int hosts_wanted_;
  Registry registry_;
  std::vector<std::unique_ptr<Daemon>> hosts_;
};

// An origin and six targets.
class NetnsFanoutTest : public NetnsTest {
 protected:
  NetnsFanoutTest() : NetnsTest(7) {}
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
  // Many clients on one host attach the one replica: sixteen concurrent gets
  // of a key it lacks make one pull.
  std::string other = Pattern(8 << 20, 9);
  ASSERT_NE(PutPublished(1, "features", other), 0u);
  std::vector<std::future<absl::Status>> gets;
  for (int i = 0; i < 16; ++i) gets.push_back(GetVerifiedAsync(3, "features", other, {}));
  for (auto& g : gets) EXPECT_TRUE(g.get().ok());
  EXPECT_EQ(Cluster(3).pulls(), 2u);  // "model" and "features"
  ExpectNothingTorn(3, 2);
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

TEST_F(NetnsTest, ALinkCutMidPullFailsOverToAnotherReplica) {
  std::string value = Pattern(64 << 20, 11);
  PutWithSecondReplica("k", value);
  auto pull = StartSlowPull("k", value, "h1");
  ASSERT_EQ(Sim(fmt::format("partition {} 1", kPrefix)), 0);
  absl::Status got = pull.get();
  EXPECT_TRUE(got.ok()) << got << "\n" << host(2).Log();
  EXPECT_GE(Cluster(2).pull_retries(), 1u);
  EXPECT_THAT(host(2).Log(), HasSubstr("took over"));  // h1 was given up as stalled
  ExpectNothingTorn(2, 1);
  ExpectNothingTorn(1, 1);
  ExpectNothingTorn(3, 1);
}

TEST_F(NetnsTest, ALinkCutMidPullWithNoOtherReplicaFailsNamingTheSourceAndKeepsNothing) {
  std::string value = Pattern(64 << 20, 12);
  ASSERT_NE(PutPublished(1, "k", value), 0u);
  const uint64_t baseline = UsedBytes(2);
  auto start = std::chrono::steady_clock::now();
  auto pull = StartSlowPull("k", value);
  ASSERT_EQ(Sim(fmt::format("partition {} 1", kPrefix)), 0);
  absl::Status got = pull.get();
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.code(), absl::StatusCode::kUnavailable) << got;
  EXPECT_THAT(got.message(), HasSubstr("'k'"));
  EXPECT_THAT(got.message(), HasSubstr("host 'h1'"));
  EXPECT_LT(took, kPullDeadline) << "the stall, not the deadline, ends it";
  ExpectNothingTorn(2, 0);
  EXPECT_EQ(UsedBytes(2), baseline);  // the reserved block is freed
  ASSERT_EQ(Sim(fmt::format("heal {} 1", kPrefix)), 0);
  ASSERT_EQ(Sim(fmt::format("rate {} 2 0", kPrefix)), 0);
  ASSERT_TRUE(Eventually([&] { return GetVerified(2, "k", value).ok(); })) << host(2).Log();
}

TEST_F(NetnsTest, ASourceKilledMidPullFailsOverToAnotherReplica) {
  std::string value = Pattern(64 << 20, 13);
  PutWithSecondReplica("k", value);
  auto pull = StartSlowPull("k", value, "h1");
  host(1).Kill(SIGKILL);
  host(1).Wait();
  absl::Status got = pull.get();
  EXPECT_TRUE(got.ok()) << got << "\n" << host(2).Log();
  EXPECT_GE(Cluster(2).pull_retries(), 1u);
  ExpectNothingTorn(2, 1);
  ExpectNothingTorn(3, 1);
}

TEST_F(NetnsTest, APullerKilledMidPullShowsNothingPartialAfterRestart) {
  std::string value = Pattern(64 << 20, 14);
  ASSERT_NE(PutPublished(1, "k", value), 0u);
  const uint64_t baseline = UsedBytes(2);
  auto pull = StartSlowPull("k", value);
  host(2).Kill(SIGKILL);
  host(2).Wait();
  EXPECT_FALSE(pull.get().ok());  // its daemon died under it
  std::string err;
  ASSERT_TRUE(host(2).Start({}, &err)) << err;
  ExpectNothingTorn(2, 0);
  EXPECT_EQ(UsedBytes(2), baseline);
  GetOptions local;
  local.local_only = true;
  EXPECT_EQ(GetVerified(2, "k", value, local).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Holders("k"), std::set<std::string>{"h1"});
  ExpectNothingTorn(1, 1);
  // The restarted daemon pulls it whole.
  ASSERT_EQ(Sim(fmt::format("rate {} 2 0", kPrefix)), 0);
  EXPECT_TRUE(GetVerified(2, "k", value).ok()) << host(2).Log();
}

TEST_F(NetnsTest, ACorruptedReplicaIsRefusedAndThePullPicksAnother) {
  std::string value = Pattern(4 << 20, 15);
  ASSERT_NE(PutPublished(1, "k", value), 0u);
  ASSERT_TRUE(GetVerified(3, "k", value).ok());
  ASSERT_TRUE(Eventually([&] { return Holders("k").size() == 2; }));
  // A stray write into h1's arena after the seal.
  int fd = ::open(host(1).arena_path().c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << host(1).arena_path();
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  void* m = ::mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(m, MAP_FAILED);
  ::close(fd);
  void* hit = ::memmem(m, st.st_size, value.data() + (1 << 20), 4096);
  ASSERT_NE(hit, nullptr);
  static_cast<char*>(hit)[7] ^= 0x01;
  ::munmap(m, st.st_size);
  GetOptions o;
  o.prefer_host = "h1";
  o.deadline = 20s;
  absl::Status got = GetVerified(2, "k", value, o);
  EXPECT_TRUE(got.ok()) << got << "\n" << host(2).Log();
  EXPECT_EQ(Cluster(2).pull_retries(), 1u);
  EXPECT_THAT(host(2).Log(), HasSubstr("checksum mismatch"));
  ExpectNothingTorn(2, 1);
}

TEST_F(NetnsTest, APeerWithoutTheClusterTokenIsRefused) {
  std::string value = Pattern(1 << 20, 16);
  ASSERT_NE(PutPublished(1, "k", value), 0u);
  namespace pv1 = cistern::peer::v1;
  auto control = [&](const std::string& token) {
    cluster::PeerChannelOptions o;
    o.cluster_id = registry_.cluster_id();
    o.token = token;
    return *cluster::PeerControlClient::Create(o);
  };
  pv1::PeerRequest open;
  open.mutable_open()->set_key("k");
  open.mutable_open()->set_requester_host("intruder");
  // The control channel refuses an Open without the token: nothing leased.
  auto refused = control("not-the-token")->Call(Advertise(1), open, 5s);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_EQ(Cluster(1).peer_leases(), 0u);
  // With the token it is served: a region, at the transport the reply names.
  auto member = control(registry_.token());
  auto opened = member->Call(Advertise(1), open, 5s);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ASSERT_TRUE(opened->has_open());
  const pv1::OpenReply& o = opened->open();
  EXPECT_THAT(o.transport_address(), ::testing::StartsWith(fmt::format("{}.11:", kSubnet)));
  EXPECT_TRUE(o.rkey().empty());  // no RDMA device here: the arena is not registered
  // The data path checks the token too: a region id alone reads nothing.
  auto read = [&](const std::string& token, std::string* bytes) {
    transport::TransportOptions to;
    to.listen_address = fmt::format("{}.1", kSubnet);
    to.token = token;
    auto t = transport::Transport::Start(to, [](uint64_t, uint64_t, uint64_t) {
      return absl::StatusOr<transport::ReadLease>(absl::NotFoundError("nothing here"));
    });
    if (!t.ok()) return t.status();
    return (*t)->Pull(o.transport_address(), o.region(), 0, bytes->size(), bytes->data(), 5s);
  };
  std::string bytes(4096, '\0');
  absl::Status stranger = read("not-the-token", &bytes);
  EXPECT_EQ(stranger.code(), absl::StatusCode::kPermissionDenied) << stranger;
  EXPECT_EQ(bytes, std::string(4096, '\0'));
  EXPECT_EQ(Cluster(1).peer_bytes_sent(), 0u);
  // The same read with the token is served (so the refusal is the token's).
  ASSERT_TRUE(read(registry_.token(), &bytes).ok());
  EXPECT_EQ(bytes, value.substr(0, bytes.size()));
  EXPECT_EQ(Cluster(1).peer_bytes_sent(), 4096u);
  pv1::PeerRequest close;
  close.mutable_close()->set_region(o.region());
  EXPECT_TRUE(member->Call(Advertise(1), close, 5s).ok());
  ASSERT_TRUE(Eventually([&] { return Cluster(1).peer_leases() == 0; }));
}

TEST_F(NetnsFanoutTest, ReplicateToSixHostsSendsEachByteFromTheOriginOnce) {
  std::string value = Pattern(64 << 20, 17);
  uint64_t gen = PutPublished(1, "weights", value);
  ASSERT_NE(gen, 0u);
  ASSERT_TRUE(Eventually([&] {
    for (int i = 1; i <= 7; ++i)
      if (Cluster(i).state() != "serving") return false;
    return true;
  }));
  auto c = host(1).Connect();
  ASSERT_TRUE(c.ok());
  ReplicateOptions ro;
  ro.all = true;
  ro.deadline = 120s;
  auto r = (*c)->Replicate("weights", ro);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->status().ok()) << r->status();
  EXPECT_EQ(r->generation, gen);
  EXPECT_EQ(r->targets.size(), 7u);  // h1 reports already held
  EXPECT_LE(r->bytes_sent["h1"], 2 * value.size());
  EXPECT_EQ(r->bytes_sent["h1"], value.size());  // a chain: exactly once
  EXPECT_EQ(Cluster(1).peer_bytes_sent(), value.size());
  GetOptions local;
  local.local_only = true;
  for (int i = 2; i <= 7; ++i) {
    EXPECT_TRUE(GetVerified(i, "weights", value, local).ok()) << "host " << i;
    ExpectNothingTorn(i, 1);
  }
  ASSERT_TRUE(Eventually([&] { return Holders("weights").size() == 7; }));
}

}  // namespace
}  // namespace cistern::testing
