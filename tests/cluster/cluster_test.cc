// A cluster on one machine: a real cistern-registry and several cisternd,
// each under its own directory, host_id and arena. Membership, publication,
// lookup, and recovery from kill -9 of the registry and of a daemon.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "fmt/format.h"
#include "tests/cluster/registry_harness.h"
#include "tests/integration/daemon_harness.h"
#include "tests/util/test_certs.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;
namespace v1 = registry::v1;

// Fast liveness, so that the tests see suspect and dead within seconds.
const std::vector<std::string> kFastLiveness = {"heartbeat_interval_ms=100", "suspect_after_ms=400",
                                                "dead_after_ms=1200", "replica_grace_ms=2s"};

class ClusterTest : public ::testing::Test {
 protected:
  explicit ClusterTest(std::vector<std::string> settings = kFastLiveness)
      : registry_("test-cluster", "test-token", std::move(settings)) {}

  void SetUp() override {
    std::string err;
    ASSERT_TRUE(registry_.Start(&err)) << err;
  }

  Daemon& AddDaemon(const std::string& host_id, std::string yaml_extra = "") {
    DaemonSpec spec;
    spec.extra_yaml =
        registry_.DaemonYaml(host_id, "127.0.0.1:" + std::to_string(FreeTcpPort())) + yaml_extra;
    daemons_.push_back(std::make_unique<Daemon>(spec));
    std::string err;
    EXPECT_TRUE(daemons_.back()->Start({}, &err)) << err;
    return *daemons_.back();
  }

  std::map<std::string, v1::HostState> States() {
    std::map<std::string, v1::HostState> out;
    auto q = registry_.Client()->QuerySystem();
    if (!q.ok()) return out;
    for (const auto& h : q->hosts()) out[h.host_id()] = h.state();
    return out;
  }

  bool AllAlive(size_t n) {
    auto s = States();
    if (s.size() != n) return false;
    for (auto& [id, st] : s) {
      if (st != v1::HOST_STATE_ALIVE) return false;
    }
    return true;
  }

  // The hosts Locate offers for (key, generation).
  std::set<std::string> Holders(const std::string& key, uint64_t generation = 0) {
    v1::LocateRequest req;
    req.set_key(key);
    req.set_generation(generation);
    auto r = registry_.Client()->Locate(req);
    std::set<std::string> out;
    if (!r.ok()) return out;
    for (const auto& l : r->locations()) out.insert(l.host_id());
    return out;
  }

  // Every (key, generation) each daemon holds, as "host key@gen".
  std::set<std::string> UnionOfInventories(const std::vector<std::string>& hosts) {
    std::set<std::string> out;
    for (size_t i = 0; i < daemons_.size(); ++i) {
      if (!daemons_[i]->running()) continue;
      auto c = daemons_[i]->Connect();
      if (!c.ok()) continue;
      auto l = (*c)->List("", 100000);
      if (!l.ok()) continue;
      for (const auto& o : l->objects()) {
        out.insert(fmt::format("{} {}@{}", hosts[i], o.key(), o.generation()));
      }
    }
    return out;
  }

  // The catalog, as "host key@gen", by locating every key of `keys`.
  std::set<std::string> Catalog(const std::set<std::string>& keys) {
    std::set<std::string> out;
    auto c = registry_.Client();
    for (const auto& k : keys) {
      v1::LocateRequest req;
      req.set_key(k);
      auto r = c->Locate(req);
      if (!r.ok()) continue;
      for (const auto& l : r->locations()) {
        out.insert(fmt::format("{} {}@{}", l.host_id(), k, r->generation()));
      }
    }
    return out;
  }

  wire::ClusterStatus AgentStatus(Daemon& d) {
    auto c = d.Connect();
    if (!c.ok()) return {};
    auto s = (*c)->Status();
    return s.ok() ? s->cluster() : wire::ClusterStatus();
  }

  Registry registry_;
  std::vector<std::unique_ptr<Daemon>> daemons_;
};

TEST_F(ClusterTest, DaemonsRegisterPublishAndAreLocated) {
  Daemon& a = AddDaemon("host-a");
  Daemon& b = AddDaemon("host-b");
  Daemon& c = AddDaemon("host-c");
  ASSERT_TRUE(Eventually([&] { return AllAlive(3); })) << registry_.Log();
  auto ca = *a.Connect();
  auto cb = *b.Connect();
  auto ga = ca->Put("model/a", std::string("weights-a"));
  auto gb = cb->Put("model/b", std::string("weights-b"));
  ASSERT_TRUE(ga.ok() && gb.ok());
  ASSERT_TRUE(Eventually([&] { return Holders("model/a") == std::set<std::string>{"host-a"}; }));
  ASSERT_TRUE(Eventually([&] { return Holders("model/b") == std::set<std::string>{"host-b"}; }));
  // Generations carry the host's number, so no two hosts issue the same one.
  auto q = registry_.Client()->QuerySystem();
  ASSERT_TRUE(q.ok());
  std::map<std::string, uint32_t> numbers;
  for (const auto& h : q->hosts()) numbers[h.host_id()] = h.host_number();
  EXPECT_EQ(ga->generation % 65536, numbers["host-a"]);
  EXPECT_EQ(gb->generation % 65536, numbers["host-b"]);
  // A get by (key, generation) is exact everywhere.
  EXPECT_EQ(Holders("model/a", ga->generation), std::set<std::string>{"host-a"});
  EXPECT_TRUE(Holders("model/a", gb->generation).empty());
  // A newer generation on another host is numbered above what the cluster has seen.
  auto gc = (*c.Connect())->Put("model/a", std::string("weights-c"));
  ASSERT_TRUE(gc.ok());
  EXPECT_GT(gc->generation, ga->generation);
  ASSERT_TRUE(Eventually([&] { return Holders("model/a") == std::set<std::string>{"host-c"}; }));
  EXPECT_EQ(Holders("model/a", ga->generation), std::set<std::string>{"host-a"});
  // Removal unpublishes; local-only puts are never published.
  ASSERT_TRUE(cb->Remove("model/b").ok());
  PutOptions local;
  local.local_only = true;
  ASSERT_TRUE(cb->Put("private", std::string("x"), local).ok());
  ASSERT_TRUE(cb->Put("marker", std::string("m")).ok());
  ASSERT_TRUE(Eventually([&] { return Holders("marker") == std::set<std::string>{"host-b"}; }));
  EXPECT_TRUE(Holders("model/b").empty());
  EXPECT_TRUE(Holders("private").empty());
  auto st = AgentStatus(b);
  EXPECT_EQ(st.state(), "serving");
  EXPECT_EQ(st.host_id(), "host-b");
  EXPECT_GE(st.published(), 3u);
}

TEST_F(ClusterTest, RegistryKilledUnderPublicationLoadForgetsNothingTheDaemonsHold) {
  std::vector<std::string> hosts = {"host-a", "host-b"};
  for (const auto& h : hosts) AddDaemon(h);
  ASSERT_TRUE(Eventually([&] { return AllAlive(2); })) << registry_.Log();
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (size_t i = 0; i < daemons_.size(); ++i) {
    writers.emplace_back([&, i] {
      auto c = daemons_[i]->Connect();
      ASSERT_TRUE(c.ok());
      for (int n = 0; !stop; ++n) {
        std::string key = fmt::format("k/{}/{}", i, n % 300);
        auto r = (*c)->Put(key, std::string(64, 'x'));
        if (!r.ok()) break;
        if (n % 7 == 0) (void)(*c)->Remove(fmt::format("k/{}/{}", i, (n / 7) % 300));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // load, not an assertion
  registry_.Kill(SIGKILL);
  registry_.Wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the daemons keep writing
  std::string err;
  ASSERT_TRUE(registry_.Start(&err)) << err;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& t : writers) t.join();
  // After re-registration and reconcile the catalog is exactly the union of
  // what the daemons hold.
  std::set<std::string> keys;
  for (int i = 0; i < 2; ++i) {
    for (int n = 0; n < 300; ++n) keys.insert(fmt::format("k/{}/{}", i, n));
  }
  std::set<std::string> want, got;
  bool same = Eventually([&] {
    if (!AllAlive(2)) return false;
    want = UnionOfInventories(hosts);
    got = Catalog(keys);
    return want == got;
  });
  EXPECT_TRUE(same) << "daemons hold " << want.size() << ", catalog has " << got.size() << "\n"
                    << registry_.Log();
  EXPECT_FALSE(want.empty());
  auto q = registry_.Client()->QuerySystem();
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->replicas(), want.size());
  EXPECT_GE(q->registry_epoch(), 2u);
}

// A registry whose database is full (database_max_bytes, the stand-in for a
// full disk: the tests run as root, for whom a read-only file is writable)
// refuses what it cannot write, with an error that says so, stays up, and
// never offers a replica that is not on disk; given room again, the daemon's
// retries bring the catalog level with what it holds. Default liveness: a
// host stays offered as unknown for 15 s after a restart.
class FullDatabaseTest : public ClusterTest {
 protected:
  FullDatabaseTest() : ClusterTest({"database_max_bytes=256KiB"}) {}
};

TEST_F(FullDatabaseTest, AFullDatabaseRefusesPublicationsAndOffersNothingUnwritten) {
  Daemon& a = AddDaemon("host-a");
  ASSERT_TRUE(Eventually([&] { return AllAlive(1); })) << registry_.Log();
  auto c = a.Connect();
  ASSERT_TRUE(c.ok()) << c.status();
  std::set<std::string> keys;
  bool full = false;
  for (int n = 0; n < 40000 && !full; ++n) {
    std::string key = fmt::format("full/{:05}/a-key-long-enough-to-fill-pages", n);
    ASSERT_TRUE((*c)->Put(key, std::string("v")).ok());  // local puts never wait on the registry
    keys.insert(key);
    if (n % 200 == 199) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      full = AgentStatus(a).last_error().find("is full") != std::string::npos;
    }
  }
  ASSERT_TRUE(full) << "no publication was refused; registry log:\n" << registry_.Log();
  auto st = AgentStatus(a);
  EXPECT_EQ(st.state(), "unreachable");
  EXPECT_THAT(st.last_error(), HasSubstr("registry database '"));
  EXPECT_TRUE(registry_.Client()->QuerySystem().ok());  // still serving
  EXPECT_THAT(registry_.Log(), HasSubstr("is full"));

  // What the registry offers is on disk: a restart over the same database
  // (the daemon frozen, so that it cannot publish meanwhile) offers the same.
  std::set<std::string> before = Catalog(keys);
  EXPECT_FALSE(before.empty());
  EXPECT_LT(before.size(), keys.size());
  a.Kill(SIGSTOP);
  std::string err;
  bool restarted = registry_.Restart(&err);
  std::set<std::string> after = Catalog(keys);
  a.Kill(SIGCONT);
  ASSERT_TRUE(restarted) << err;
  EXPECT_EQ(after, before);

  // Room again: the daemon's retries publish the rest.
  registry_.set_settings({});
  ASSERT_TRUE(registry_.Restart(&err)) << err;
  std::set<std::string> want, got;
  bool level = Eventually([&] {
    want = UnionOfInventories({"host-a"});
    got = Catalog(keys);
    return want == got;
  });
  EXPECT_TRUE(level) << "daemon holds " << want.size() << ", catalog has " << got.size();
  EXPECT_EQ(want.size(), keys.size());
  EXPECT_TRUE(Eventually([&] { return AgentStatus(a).state() == "serving"; }));
}

TEST_F(ClusterTest, AKilledDaemonBecomesSuspectThenDeadAndIsNoLongerOffered) {
  Daemon& a = AddDaemon("host-a");
  AddDaemon("host-b");
  ASSERT_TRUE(Eventually([&] { return AllAlive(2); }));
  ASSERT_TRUE((*a.Connect())->Put("only-on-a", std::string("v")).ok());
  ASSERT_TRUE(Eventually([&] { return Holders("only-on-a") == std::set<std::string>{"host-a"}; }));
  a.Kill(SIGKILL);
  a.Wait();
  ASSERT_TRUE(Eventually([&] { return States()["host-a"] == v1::HOST_STATE_SUSPECT; }))
      << registry_.Log();
  ASSERT_TRUE(Eventually([&] { return States()["host-a"] == v1::HOST_STATE_DEAD; }));
  EXPECT_TRUE(Holders("only-on-a").empty());
  EXPECT_EQ(States()["host-b"], v1::HOST_STATE_ALIVE);
  // Back under the same identity: it re-registers, and its object is offered again.
  std::string err;
  ASSERT_TRUE(a.Start({}, &err)) << err;
  ASSERT_TRUE(Eventually([&] { return Holders("only-on-a") == std::set<std::string>{"host-a"}; }))
      << registry_.Log();
}

TEST_F(ClusterTest, ADaemonWithTheWrongTokenOrClusterIsRefusedAndSaysWhy) {
  DaemonSpec spec;
  spec.extra_yaml = fmt::format(
      "host_id: intruder\ncluster:\n  registry: {}\n  cluster_id: test-cluster\n  token: wrong\n"
      "  advertise: 127.0.0.1:{}\n",
      registry_.endpoint(), FreeTcpPort());
  Daemon bad_token(spec);
  std::string err;
  ASSERT_TRUE(bad_token.Start({}, &err)) << err;
  spec.extra_yaml = fmt::format(
      "host_id: stranger\ncluster:\n  registry: {}\n  cluster_id: other-cluster\n"
      "  token: test-token\n  advertise: 127.0.0.1:{}\n",
      registry_.endpoint(), FreeTcpPort());
  Daemon bad_cluster(spec);
  ASSERT_TRUE(bad_cluster.Start({}, &err)) << err;
  ASSERT_TRUE(Eventually([&] { return AgentStatus(bad_token).state() == "refused"; }));
  EXPECT_THAT(AgentStatus(bad_token).last_error(), HasSubstr("token"));
  ASSERT_TRUE(Eventually([&] { return AgentStatus(bad_cluster).state() == "refused"; }));
  EXPECT_THAT(AgentStatus(bad_cluster).last_error(), HasSubstr("other-cluster"));
  EXPECT_TRUE(States().empty());
  // They still serve their own host.
  EXPECT_TRUE((*bad_token.Connect())->Put("local", std::string("ok")).ok());
}

TEST_F(ClusterTest, ARegistryDownAtDaemonStartIsRetriedUntilItAnswers) {
  registry_.Kill(SIGKILL);
  registry_.Wait();
  Daemon& a = AddDaemon("host-a");
  ASSERT_TRUE((*a.Connect())->Put("early", std::string("v")).ok());  // served meanwhile
  ASSERT_TRUE(Eventually([&] {
    auto st = AgentStatus(a);
    return st.state() == "unreachable" && !st.last_error().empty();
  }));
  std::string err;
  ASSERT_TRUE(registry_.Start(&err)) << err;
  ASSERT_TRUE(Eventually([&] { return Holders("early") == std::set<std::string>{"host-a"}; }))
      << registry_.Log();
  EXPECT_EQ(AgentStatus(a).state(), "serving");
}

TEST_F(ClusterTest, APutCanWaitForItsPublication) {
  Daemon& a = AddDaemon("host-a");
  ASSERT_TRUE(Eventually([&] { return AllAlive(1); }));
  auto c = *a.Connect();
  PutOptions wait;
  wait.wait_published = std::chrono::seconds(10);
  for (int i = 0; i < 20; ++i) {
    std::string key = "waited/" + std::to_string(i);
    auto r = c->Put(key, std::string("v"), wait);
    ASSERT_TRUE(r.ok()) << r.status();
    // Acknowledged means locatable, with no polling.
    EXPECT_EQ(Holders(key, r->generation), std::set<std::string>{"host-a"}) << key;
  }
  PutOptions local = wait;
  local.local_only = true;
  EXPECT_TRUE(c->Put("waited/local", std::string("v"), local).ok());  // nothing to wait for
  registry_.Kill(SIGSTOP);  // a registry that does not answer
  PutOptions brief;
  brief.wait_published = std::chrono::milliseconds(300);
  auto late = c->Put("waited/late", std::string("v"), brief);
  registry_.Kill(SIGCONT);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(late.status().message(), HasSubstr("stored on this host but not yet published"));
  EXPECT_TRUE(c->Stat("waited/late").ok());  // stored all the same
  EXPECT_TRUE(
      Eventually([&] { return Holders("waited/late") == std::set<std::string>{"host-a"}; }));
}

TEST_F(ClusterTest, ACleanStopLeavesTheClusterAtOnce) {
  Daemon& a = AddDaemon("host-a");
  ASSERT_TRUE(Eventually([&] { return AllAlive(1); }));
  ASSERT_TRUE((*a.Connect())->Put("k", std::string("v")).ok());
  ASSERT_TRUE(Eventually([&] { return !Holders("k").empty(); }));
  a.Kill(SIGTERM);
  EXPECT_EQ(a.Wait(), 0);
  EXPECT_EQ(States()["host-a"], v1::HOST_STATE_LEFT);
  EXPECT_TRUE(Holders("k").empty());
}

// A daemon joins a registry that speaks TLS only, trusting its CA; one that
// does not trust it stays out.
TEST(ClusterTlsTest, DaemonsJoinOverTlsAndOthersCannot) {
  testing_tls::TempTestCerts certs;
  ASSERT_TRUE(certs.ok) << certs.error;
  auto tls_registry = TlsRegistry(certs, "tls-cluster", "tls-token");
  Registry& registry = *tls_registry;
  std::string err;
  ASSERT_TRUE(registry.Start(&err)) << err;
  DaemonSpec spec;
  spec.extra_yaml = registry.DaemonYaml("tls-host", "127.0.0.1:" + std::to_string(FreeTcpPort()));
  Daemon good(spec);
  ASSERT_TRUE(good.Start({}, &err)) << err;
  ASSERT_TRUE((*good.Connect())->Put("secure", std::string("v")).ok());
  v1::LocateRequest req;
  req.set_key("secure");
  ASSERT_TRUE(Eventually([&] { return registry.Client()->Locate(req).ok(); })) << registry.Log();
  registry.UseTls(certs.other_ca);
  spec.extra_yaml =
      registry.DaemonYaml("untrusting-host", "127.0.0.1:" + std::to_string(FreeTcpPort()));
  Daemon bad(spec);
  ASSERT_TRUE(bad.Start({}, &err)) << err;
  auto status = [&] {
    auto c = bad.Connect();
    return c.ok() ? (*(*c)->Status()).cluster() : wire::ClusterStatus();
  };
  ASSERT_TRUE(Eventually([&] { return status().state() == "unreachable"; }));
  registry.UseTls(certs.ca);
  auto q = registry.Client()->QuerySystem();
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->hosts_size(), 1);
  EXPECT_EQ(q->hosts(0).host_id(), "tls-host");
}

}  // namespace
}  // namespace cistern::testing
