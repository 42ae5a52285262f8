#include "src/catalog/catalog.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "src/catalog/records.h"

namespace cistern::catalog {
namespace {

using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class CatalogTest : public ::testing::Test {
 protected:
  CatalogTest() {
    options_.cluster_id = "test";
    options_.suspect_after = seconds(5);
    options_.dead_after = seconds(15);
    options_.replica_grace = seconds(60);
    options_.max_transfers_per_source = 2;
    options_.transfer_ttl = seconds(30);
    Reload();
  }

  // Loads a fresh catalog from backend_, as a registry restart does.
  void Reload() {
    catalog_.reset();
    Txn txn;
    auto c = Catalog::Load(backend_, options_, &clock_, &txn);
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = std::move(*c);
    Finish(&txn);
  }

  // Makes a txn durable in backend_ and commits it (or rolls back on failure).
  absl::Status Finish(Txn* txn) {
    absl::Status s = backend_.Apply(txn->batch);
    if (s.ok()) {
      catalog_->Commit(txn);
    } else {
      catalog_->Rollback(txn);
    }
    return s;
  }

  static v1::Replica Rep(std::string key, uint64_t gen, std::string tier = "ram",
                         uint64_t size = 100, uint64_t checksum = 7) {
    v1::Replica r;
    r.set_key(std::move(key));
    r.set_generation(gen);
    r.set_tier(std::move(tier));
    r.set_size(size);
    r.set_checksum(checksum);
    r.set_has_checksum(true);
    return r;
  }

  static v1::RegisterRequest Reg(std::string host, uint64_t incarnation = 1) {
    v1::RegisterRequest req;
    req.set_host_id(host);
    req.set_advertise(host + ":7000");
    req.set_incarnation(incarnation);
    auto* t = req.add_tiers();
    t->set_name("ram");
    t->set_capacity_bytes(1 << 30);
    auto* t2 = req.add_tiers();
    t2->set_name("ssd");
    t2->set_capacity_bytes(1ull << 34);
    return req;
  }

  v1::RegisterReply Register(const std::string& host, uint64_t incarnation = 1) {
    Txn txn;
    auto r = catalog_->Register(Reg(host, incarnation), &txn);
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(Finish(&txn).ok());
    return r.ok() ? *r : v1::RegisterReply();
  }

  absl::StatusOr<v1::PublishReply> Publish(
      const std::string& host, uint64_t seq, std::vector<v1::Replica> added,
      std::vector<std::pair<std::string, uint64_t>> removed = {}, uint64_t incarnation = 1) {
    v1::PublishRequest req;
    req.set_host_id(host);
    req.set_incarnation(incarnation);
    req.set_seq(seq);
    for (auto& a : added) *req.add_added() = a;
    for (auto& [k, g] : removed) {
      auto* r = req.add_removed();
      r->set_key(k);
      r->set_generation(g);
    }
    Txn txn;
    auto reply = catalog_->Publish(req, &txn);
    if (!reply.ok()) {
      EXPECT_TRUE(txn.empty()) << "a refused publication left changes behind";
      return reply;
    }
    if (absl::Status s = Finish(&txn); !s.ok()) return s;
    return reply;
  }

  absl::StatusOr<v1::SyncReply> Sync(const std::string& host, std::vector<v1::Replica> replicas,
                                     uint64_t publish_seq = 0, uint64_t incarnation = 1) {
    v1::InventoryChunk chunk;
    chunk.set_host_id(host);
    chunk.set_incarnation(incarnation);
    for (auto& r : replicas) *chunk.add_replicas() = r;
    chunk.set_last(true);
    chunk.set_publish_seq(publish_seq);
    Txn txn;
    auto reply = catalog_->SyncChunk(chunk, /*first=*/true, &txn);
    if (!reply.ok()) return reply;
    if (absl::Status s = Finish(&txn); !s.ok()) return s;
    return reply;
  }

  absl::StatusOr<v1::HeartbeatReply> Heartbeat(const std::string& host, uint64_t incarnation = 1) {
    v1::HeartbeatRequest req;
    req.set_host_id(host);
    req.set_incarnation(incarnation);
    Txn txn;
    auto r = catalog_->Heartbeat(req, &txn);
    if (r.ok()) EXPECT_TRUE(Finish(&txn).ok());
    return r;
  }

  void Tick() {
    Txn txn;
    catalog_->Tick(&txn);
    ASSERT_TRUE(Finish(&txn).ok());
  }

  std::vector<std::string> HostsOf(const std::string& key, uint64_t gen = 0,
                                   const std::string& requester = "") {
    v1::LocateRequest req;
    req.set_key(key);
    req.set_generation(gen);
    req.set_requester_host(requester);
    auto r = catalog_->Locate(req);
    std::vector<std::string> out;
    if (!r.ok()) return out;
    for (const auto& l : r->locations()) out.push_back(l.host_id());
    return out;
  }

  v1::HostState StateOf(const std::string& host) {
    v1::QuerySystemReply q = catalog_->QuerySystem();
    for (const auto& h : q.hosts()) {
      if (h.host_id() == host) return h.state();
    }
    return v1::HOST_STATE_UNSPECIFIED;
  }

  // Everything a reader can see, for before/after comparisons.
  std::string View() {
    v1::QuerySystemReply q = catalog_->QuerySystem();
    std::string s = q.SerializeAsString();
    for (const auto& h : q.hosts()) {
      auto v = catalog_->VersionForTest(h.host_id());
      s += v->SerializeAsString();
    }
    return s;
  }

  CatalogOptions options_;
  FakeClock clock_;
  registry::MemoryBackend backend_;
  std::unique_ptr<Catalog> catalog_;
};

TEST_F(CatalogTest, HostNumbersAreStableAcrossRegistrationsAndRestarts) {
  EXPECT_EQ(Register("a").host_number(), 1u);
  EXPECT_EQ(Register("b").host_number(), 2u);
  EXPECT_EQ(Register("a", 2).host_number(), 1u);
  Reload();
  EXPECT_EQ(Register("b", 5).host_number(), 2u);
  EXPECT_EQ(Register("c").host_number(), 3u);
}

TEST_F(CatalogTest, EachLoadIsANewEpoch) {
  uint64_t first = catalog_->epoch();
  Reload();
  EXPECT_EQ(catalog_->epoch(), first + 1);
  EXPECT_EQ(Register("a").registry_epoch(), first + 1);
}

TEST_F(CatalogTest, PublishedReplicaIsLocatedAndGetByGenerationIsExact) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 10), Rep("k", 12)}).ok());
  v1::LocateRequest req;
  req.set_key("k");
  auto r = catalog_->Locate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generation(), 12u);
  ASSERT_EQ(r->locations_size(), 1);
  EXPECT_EQ(r->locations(0).advertise(), "a:7000");
  EXPECT_EQ(r->locations(0).checksum(), 7u);
  req.set_generation(10);
  r = catalog_->Locate(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->generation(), 10u);
  req.set_generation(11);
  EXPECT_EQ(catalog_->Locate(req).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CatalogTest, RemovedReplicaIsNoLongerOffered) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 10)}).ok());
  ASSERT_TRUE(Publish("a", 2, {}, {{"k", 10}}).ok());
  EXPECT_TRUE(HostsOf("k").empty());
  EXPECT_EQ(catalog_->replica_count(), 0u);
  EXPECT_EQ(catalog_->key_count(), 0u);
}

TEST_F(CatalogTest, PublicationRetryIsIdempotentAndAGapIsRefused) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 10)}).ok());
  std::string before = View();
  auto retry = Publish("a", 1, {Rep("other", 11)});
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(View(), before);
  auto gap = Publish("a", 3, {Rep("x", 12)});
  EXPECT_EQ(gap.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(gap.status().message(), HasSubstr("expected seq 2, got 3"));
  EXPECT_EQ(View(), before);
}

TEST_F(CatalogTest, StaleIncarnationIsRefusedAndChangesNothing) {
  Register("a", 5);
  std::string before = View();
  EXPECT_EQ(Publish("a", 1, {Rep("k", 1)}, {}, 4).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Txn txn;
  auto older = catalog_->Register(Reg("a", 4), &txn);
  EXPECT_EQ(older.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(older.status().message(), HasSubstr("another daemon"));
  EXPECT_TRUE(txn.empty());
  EXPECT_EQ(View(), before);
}

TEST_F(CatalogTest, NewIncarnationRestartsPublicationSequence) {
  Register("a", 1);
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1)}).ok());
  ASSERT_TRUE(Publish("a", 2, {Rep("k", 2)}).ok());
  Register("a", 2);
  EXPECT_TRUE(Publish("a", 1, {Rep("k", 3)}, {}, 2).ok());
  EXPECT_THAT(HostsOf("k", 3), ElementsAre("a"));
}

TEST_F(CatalogTest, RegistrationWithMatchingVersionNeedsNoSync) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1), Rep("j", 2)}).ok());
  v1::StateVersion v = *catalog_->VersionForTest("a");
  Reload();
  Txn txn;
  v1::RegisterRequest req = Reg("a");
  *req.mutable_version() = v;
  auto r = catalog_->Register(req, &txn);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->sync_required());
  EXPECT_EQ(r->registry_version().publish_seq(), 1u);
  req.mutable_version()->set_digest(v.digest() ^ 1);
  r = catalog_->Register(req, &txn);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->sync_required());
}

TEST_F(CatalogTest, DigestMatchesWhatADaemonComputes) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1, "ram", 5, 9), Rep("j", 2, "ssd", 6, 3)}).ok());
  uint64_t want =
      ReplicaDigest("k", 1, "ram", 5, 9, true) ^ ReplicaDigest("j", 2, "ssd", 6, 3, true);
  EXPECT_EQ(catalog_->VersionForTest("a")->digest(), want);
  EXPECT_EQ(catalog_->VersionForTest("a")->count(), 2u);
}

TEST_F(CatalogTest, SyncReconcilesEveryKindOfDivergence) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("kept", 1), Rep("gone", 2), Rep("moved", 3, "ram", 100)}).ok());
  // The daemon holds: kept (same), moved (now in ssd), lost (the catalog never heard of it).
  auto r = Sync("a", {Rep("kept", 1), Rep("moved", 3, "ssd", 100), Rep("lost", 4)}, 7);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->report().kept(), 1u);
  EXPECT_EQ(r->report().updated(), 1u);
  EXPECT_EQ(r->report().added(), 1u);
  EXPECT_EQ(r->report().removed(), 1u);
  EXPECT_TRUE(HostsOf("gone").empty());
  EXPECT_THAT(HostsOf("lost"), ElementsAre("a"));
  v1::LocateRequest req;
  req.set_key("moved");
  EXPECT_EQ(catalog_->Locate(req)->locations(0).tier(), "ssd");
  // The sync set the publication sequence: the next publication is 8.
  EXPECT_TRUE(Publish("a", 8, {Rep("next", 5)}).ok());
  EXPECT_EQ(catalog_->counters().reconcile_removed, 1u);
}

TEST_F(CatalogTest, ChunkedSyncRemovesOnlyWhatNoChunkNamed) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("x", 1), Rep("y", 2), Rep("z", 3)}).ok());
  v1::InventoryChunk c1;
  c1.set_host_id("a");
  c1.set_incarnation(1);
  *c1.add_replicas() = Rep("x", 1);
  Txn txn;
  ASSERT_TRUE(catalog_->SyncChunk(c1, true, &txn).ok());
  v1::InventoryChunk c2 = c1;
  c2.clear_replicas();
  *c2.add_replicas() = Rep("z", 3);
  c2.set_last(true);
  auto r = catalog_->SyncChunk(c2, false, &txn);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(Finish(&txn).ok());
  EXPECT_EQ(r->report().kept(), 2u);
  EXPECT_EQ(r->report().removed(), 1u);
  EXPECT_TRUE(HostsOf("y").empty());
  EXPECT_THAT(HostsOf("z"), ElementsAre("a"));
}

TEST_F(CatalogTest, PublishDuringSyncAndChunkOutsideSyncAreRefused) {
  Register("a");
  v1::InventoryChunk c;
  c.set_host_id("a");
  c.set_incarnation(1);
  Txn txn;
  EXPECT_EQ(catalog_->SyncChunk(c, false, &txn).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(catalog_->SyncChunk(c, true, &txn).ok());
  ASSERT_TRUE(Finish(&txn).ok());
  EXPECT_EQ(Publish("a", 1, {Rep("k", 1)}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CatalogTest, SameGenerationWithOtherBytesOnAnotherHostIsAConflict) {
  Register("a");
  Register("b");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 5, "ram", 100, 1)}).ok());
  auto r = Publish("b", 1, {Rep("k", 5, "ram", 100, 2), Rep("k2", 6)});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->conflicted_size(), 1);
  EXPECT_EQ(r->conflicted(0).key(), "k");
  EXPECT_THAT(HostsOf("k", 5), ElementsAre("a"));
  EXPECT_THAT(HostsOf("k2"), ElementsAre("b"));
  // b's view counts what b reported, the conflict included, so b's own
  // digest and the registry's agree; removing it restores the rest.
  EXPECT_EQ(
      catalog_->VersionForTest("b")->digest(),
      ReplicaDigest("k", 5, "ram", 100, 2, true) ^ ReplicaDigest("k2", 6, "ram", 100, 7, true));
  EXPECT_EQ(catalog_->VersionForTest("b")->count(), 2u);
  ASSERT_TRUE(Publish("b", 2, {}, {{"k", 5}}).ok());
  EXPECT_EQ(catalog_->VersionForTest("b")->digest(), ReplicaDigest("k2", 6, "ram", 100, 7, true));
  EXPECT_EQ(catalog_->VersionForTest("b")->count(), 1u);
  // The same bytes on a second host are a second replica.
  ASSERT_TRUE(Publish("b", 3, {Rep("k", 5, "ram", 100, 1)}).ok());
  EXPECT_THAT(HostsOf("k", 5), ElementsAre("a", "b"));
}

TEST_F(CatalogTest, MissedHeartbeatsMakeAHostSuspectThenDeadThenItsReplicasGo) {
  Register("a");
  Register("b");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1)}).ok());
  ASSERT_TRUE(Publish("b", 1, {Rep("k", 1)}).ok());
  clock_.Advance(seconds(6));
  ASSERT_TRUE(Heartbeat("b").ok());
  Tick();
  EXPECT_EQ(StateOf("a"), v1::HOST_STATE_SUSPECT);
  EXPECT_EQ(StateOf("b"), v1::HOST_STATE_ALIVE);
  EXPECT_THAT(HostsOf("k"), ElementsAre("b", "a"));  // suspect last
  clock_.Advance(seconds(10));
  ASSERT_TRUE(Heartbeat("b").ok());
  Tick();
  EXPECT_EQ(StateOf("a"), v1::HOST_STATE_DEAD);
  EXPECT_THAT(HostsOf("k"), ElementsAre("b"));  // dead: not offered
  EXPECT_EQ(catalog_->replica_count(), 2u);     // but kept during the grace
  EXPECT_EQ(Heartbeat("a").status().code(), absl::StatusCode::kFailedPrecondition);
  clock_.Advance(seconds(61));
  ASSERT_TRUE(Heartbeat("b").ok());
  Tick();
  EXPECT_EQ(catalog_->replica_count(), 1u);
  EXPECT_EQ(catalog_->counters().replicas_dropped_dead, 1u);
}

TEST_F(CatalogTest, HeartbeatRevivesASuspectHost) {
  Register("a");
  clock_.Advance(seconds(6));
  Tick();
  ASSERT_EQ(StateOf("a"), v1::HOST_STATE_SUSPECT);
  ASSERT_TRUE(Heartbeat("a").ok());
  EXPECT_EQ(StateOf("a"), v1::HOST_STATE_ALIVE);
}

TEST_F(CatalogTest, ADeadHostThatRegistersAgainIsAliveAndReconciles) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1), Rep("j", 2)}).ok());
  clock_.Advance(seconds(20));
  Tick();
  ASSERT_EQ(StateOf("a"), v1::HOST_STATE_DEAD);
  auto reg = Register("a", 2);
  EXPECT_EQ(StateOf("a"), v1::HOST_STATE_ALIVE);
  EXPECT_TRUE(reg.sync_required());
  ASSERT_TRUE(Sync("a", {Rep("k", 1)}, 0, 2).ok());
  EXPECT_THAT(HostsOf("k"), ElementsAre("a"));
  EXPECT_TRUE(HostsOf("j").empty());
}

TEST_F(CatalogTest, HeartbeatAsksForASyncWhenTheDigestDiverges) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1)}).ok());
  v1::HeartbeatRequest hb;
  hb.set_host_id("a");
  hb.set_incarnation(1);
  *hb.mutable_version() = *catalog_->VersionForTest("a");
  Txn txn;
  EXPECT_FALSE(catalog_->Heartbeat(hb, &txn)->sync_required());
  hb.mutable_version()->set_count(2);
  EXPECT_TRUE(catalog_->Heartbeat(hb, &txn)->sync_required());
  // A publication in flight (the daemon is ahead): no sync asked.
  hb.mutable_version()->set_publish_seq(2);
  EXPECT_FALSE(catalog_->Heartbeat(hb, &txn)->sync_required());
}

TEST_F(CatalogTest, RestartForgetsNothingAndMarksHostsUnknown) {
  Register("a");
  Register("b");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1), Rep("j", 2, "ssd")}).ok());
  ASSERT_TRUE(Publish("b", 1, {Rep("k", 1)}).ok());
  v1::StateVersion va = *catalog_->VersionForTest("a");
  Reload();
  EXPECT_EQ(StateOf("a"), v1::HOST_STATE_UNKNOWN);
  EXPECT_EQ(catalog_->replica_count(), 3u);
  EXPECT_EQ(catalog_->VersionForTest("a")->digest(), va.digest());
  EXPECT_THAT(HostsOf("k"), ElementsAre("a", "b"));  // unknown hosts are still offered
  // Calls of the old registration are told to register again.
  EXPECT_THAT(Heartbeat("a").status().message(), HasSubstr("register again"));
  Register("a");
  EXPECT_THAT(HostsOf("k"), ElementsAre("a", "b"));  // alive before unknown
  Register("b");
  EXPECT_THAT(HostsOf("k"), ElementsAre("a", "b"));
  EXPECT_GE(catalog_->QuerySystem().generation_floor(), 2u);
}

TEST_F(CatalogTest, AnUnknownHostThatNeverReturnsIsDeclaredDead) {
  Register("a");
  Reload();
  clock_.Advance(seconds(16));
  Tick();
  EXPECT_EQ(StateOf("a"), v1::HOST_STATE_DEAD);
}

TEST_F(CatalogTest, DatabaseOfAnotherClusterIsRefused) {
  Register("a");
  catalog_.reset();
  options_.cluster_id = "other";
  Txn txn;
  auto c = Catalog::Load(backend_, options_, &clock_, &txn);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("cluster 'test'"));
}

TEST_F(CatalogTest, CorruptRecordIsDataLoss) {
  registry::WriteBatch b;
  b.Put(ReplicaKey("k", 1, 9), "x");
  ASSERT_TRUE(backend_.Apply(b).ok());
  catalog_.reset();
  Txn txn;
  auto c = Catalog::Load(backend_, options_, &clock_, &txn);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(CatalogTest, AFailedWriteLeavesMemoryExactlyAsItWas) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1), Rep("j", 2)}).ok());
  std::string before = View();
  backend_.FailWritesForTest(absl::UnavailableError("disk gone"));
  EXPECT_EQ(Publish("a", 2, {Rep("k", 3), Rep("new", 4)}, {{"j", 2}}).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(View(), before);
  Txn txn;
  ASSERT_TRUE(catalog_->Register(Reg("b"), &txn).ok());
  ASSERT_TRUE(catalog_->Register(Reg("a", 2), &txn).ok());
  EXPECT_FALSE(Finish(&txn).ok());
  EXPECT_EQ(View(), before);
  EXPECT_EQ(Sync("a", {Rep("z", 9)}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(View(), before);
  backend_.FailWritesForTest(absl::OkStatus());
  EXPECT_TRUE(Publish("a", 2, {Rep("k", 3)}).ok());
  Reload();
  EXPECT_EQ(catalog_->replica_count(), 3u);
  EXPECT_EQ(catalog_->host_count(), 1u);
}

TEST_F(CatalogTest, UncommittedAdditionsAreInvisible) {
  Register("a");
  v1::PublishRequest req;
  req.set_host_id("a");
  req.set_incarnation(1);
  req.set_seq(1);
  *req.add_added() = Rep("k", 1);
  Txn txn;
  ASSERT_TRUE(catalog_->Publish(req, &txn).ok());
  EXPECT_TRUE(HostsOf("k").empty());
  Txn reg;
  ASSERT_TRUE(catalog_->Register(Reg("b"), &reg).ok());
  EXPECT_EQ(catalog_->QuerySystem().hosts_size(), 1);
  ASSERT_TRUE(Finish(&txn).ok());
  ASSERT_TRUE(Finish(&reg).ok());
  EXPECT_THAT(HostsOf("k"), ElementsAre("a"));
  EXPECT_EQ(catalog_->QuerySystem().hosts_size(), 2);
}

TEST_F(CatalogTest, LocateRanksRequesterThenFirstTierThenLoad) {
  Register("a");
  Register("b");
  Register("c");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1, "ssd")}).ok());
  ASSERT_TRUE(Publish("b", 1, {Rep("k", 1, "ram")}).ok());
  ASSERT_TRUE(Publish("c", 1, {Rep("k", 1, "ram")}).ok());
  EXPECT_THAT(HostsOf("k"), ElementsAre("b", "c", "a"));
  EXPECT_THAT(HostsOf("k", 0, "a"), ElementsAre("a", "b", "c"));
  // A transfer from b makes c the better ram source.
  v1::ClaimTransferRequest claim;
  claim.set_key("k");
  claim.set_target_host("a");
  claim.set_prefer_host("b");
  Txn txn;
  auto r = catalog_->ClaimTransfer(claim, &txn);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->source().host_id(), "b");
  ASSERT_TRUE(Finish(&txn).ok());
  EXPECT_THAT(HostsOf("k"), ElementsAre("c", "b", "a"));
}

TEST_F(CatalogTest, TransferCapsPerSource) {
  Register("a");
  Register("t");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1)}).ok());
  v1::ClaimTransferRequest claim;
  claim.set_key("k");
  claim.set_target_host("t");
  std::vector<uint64_t> ids;
  for (int i = 0; i < 2; ++i) {
    Txn txn;
    auto r = catalog_->ClaimTransfer(claim, &txn);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(Finish(&txn).ok());
    ids.push_back(r->claim_id());
  }
  Txn txn;
  auto refused = catalog_->ClaimTransfer(claim, &txn);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("cap"));
  v1::CompleteTransferRequest done;
  done.set_claim_id(ids[0]);
  ASSERT_TRUE(catalog_->CompleteTransfer(done, &txn).ok());
  ASSERT_TRUE(Finish(&txn).ok());
  EXPECT_EQ(catalog_->CompleteTransfer(done, &txn).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(catalog_->ClaimTransfer(claim, &txn).ok());
  ASSERT_TRUE(Finish(&txn).ok());
  // The holder pulling from itself is no source.
  claim.set_target_host("a");
  EXPECT_EQ(catalog_->ClaimTransfer(claim, &txn).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CatalogTest, UncompletedClaimsLapseAndSurviveARestart) {
  Register("a");
  Register("t");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1)}).ok());
  v1::ClaimTransferRequest claim;
  claim.set_key("k");
  claim.set_target_host("t");
  for (int i = 0; i < 2; ++i) {
    Txn txn;
    ASSERT_TRUE(catalog_->ClaimTransfer(claim, &txn).ok());
    ASSERT_TRUE(Finish(&txn).ok());
  }
  Reload();
  Register("a");
  Register("t");
  Txn txn;
  EXPECT_EQ(catalog_->ClaimTransfer(claim, &txn).status().code(),
            absl::StatusCode::kResourceExhausted);
  clock_.Advance(seconds(31));
  ASSERT_TRUE(Heartbeat("a").ok());
  ASSERT_TRUE(Heartbeat("t").ok());
  Tick();
  EXPECT_EQ(catalog_->counters().claims_expired, 2u);
  EXPECT_TRUE(catalog_->ClaimTransfer(claim, &txn).ok());
}

TEST_F(CatalogTest, DeregisterDropsReplicasAtOnce) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1)}).ok());
  v1::DeregisterRequest req;
  req.set_host_id("a");
  req.set_incarnation(1);
  Txn txn;
  auto r = catalog_->Deregister(req, &txn);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(Finish(&txn).ok());
  EXPECT_EQ(r->replicas_dropped(), 1u);
  EXPECT_EQ(StateOf("a"), v1::HOST_STATE_LEFT);
  EXPECT_TRUE(HostsOf("k").empty());
  Reload();
  EXPECT_EQ(StateOf("a"), v1::HOST_STATE_LEFT);
}

TEST_F(CatalogTest, GenerationFloorRisesWithPublicationsAndRegistrations) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 70)}).ok());
  v1::RegisterRequest req = Reg("b");
  req.set_max_generation(90);
  Txn txn;
  ASSERT_TRUE(catalog_->Register(req, &txn).ok());
  ASSERT_TRUE(Finish(&txn).ok());
  EXPECT_EQ(Register("c").generation_floor(), 90u);
  Reload();
  EXPECT_EQ(catalog_->QuerySystem().generation_floor(), 90u);
}

// Bad input on every call: a clear status, nothing changed.
TEST_F(CatalogTest, BadRequestsAreRefusedAndChangeNothing) {
  Register("a");
  ASSERT_TRUE(Publish("a", 1, {Rep("k", 1)}).ok());
  std::string before = View();
  auto expect_invalid = [&](absl::Status s, std::string_view text) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(text));
    EXPECT_EQ(View(), before);
  };
  Txn txn;
  auto reg = Reg("a b");
  expect_invalid(catalog_->Register(reg, &txn).status(), "host_id");
  reg = Reg(std::string(65, 'h'));
  expect_invalid(catalog_->Register(reg, &txn).status(), "host_id");
  reg = Reg("n");
  reg.set_advertise("");
  expect_invalid(catalog_->Register(reg, &txn).status(), "advertise");
  reg = Reg("n");
  reg.set_incarnation(0);
  expect_invalid(catalog_->Register(reg, &txn).status(), "incarnation");
  reg = Reg("n");
  reg.mutable_tiers(1)->set_name("ram");
  expect_invalid(catalog_->Register(reg, &txn).status(), "named twice");
  reg = Reg("n");
  reg.mutable_tiers(0)->set_used_bytes(2ull << 30);
  expect_invalid(catalog_->Register(reg, &txn).status(), "exceeds capacity");
  reg = Reg("n");
  reg.clear_tiers();
  expect_invalid(catalog_->Register(reg, &txn).status(), "tiers");
  EXPECT_TRUE(txn.empty());

  expect_invalid(Publish("a", 2, {Rep("", 1)}).status(), "key is empty");
  expect_invalid(Publish("a", 2, {Rep(std::string(1025, 'k'), 1)}).status(), "exceeds the limit");
  expect_invalid(Publish("a", 2, {Rep("k", 0)}).status(), "generation 0");
  expect_invalid(Publish("a", 2, {Rep("k", 1ull << 63)}).status(), "generation");
  expect_invalid(Publish("a", 2, {Rep("k", 2, "ram", 0)}).status(), "size of");
  expect_invalid(Publish("a", 2, {Rep("k", 2, "nvme")}).status(), "no tier 'nvme'");
  expect_invalid(Publish("a", 2, {Rep("ok", 2), Rep("k", 2, "Bad!")}).status(), "tier name");
  expect_invalid(Publish("a", 2, {}, {{"k", 0}}).status(), "generation 0");
  expect_invalid(Sync("a", {Rep("k", 1), Rep("", 2)}).status(), "key is empty");

  EXPECT_EQ(Publish("ghost", 1, {Rep("k", 1)}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Heartbeat("ghost").status().code(), absl::StatusCode::kNotFound);
  v1::LocateRequest loc;
  expect_invalid(catalog_->Locate(loc).status(), "key is empty");
  loc.set_key("missing");
  EXPECT_EQ(catalog_->Locate(loc).status().code(), absl::StatusCode::kNotFound);
  v1::ClaimTransferRequest claim;
  claim.set_key("k");
  claim.set_target_host("ghost");
  EXPECT_EQ(catalog_->ClaimTransfer(claim, &txn).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(txn.empty());
  EXPECT_EQ(View(), before);
}

}  // namespace
}  // namespace cistern::catalog
