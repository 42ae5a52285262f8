#include "src/stream/stream.h"

#include <xxhash.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/units.h"
#include "src/store/store_test_util.h"
#include "src/stream/ledger_keys.h"
#include "src/stream/stream_manager.h"

namespace cistern::stream {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
constexpr store::SessionId kProducer = 1;
using Refs = std::vector<wire::SampleRef>;
using Ms = std::chrono::milliseconds;

// The bytes the harness puts for sample `id`: distinct per sample.
std::string Value(const std::string& id, size_t bytes) {
  std::string v(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) v[i] = id[i % id.size()];
  return v;
}

std::vector<std::string> Ids(const Refs& refs) {
  std::vector<std::string> ids;
  for (const auto& r : refs) ids.push_back(r.sample_id());
  return ids;
}

// A store over heap memory, a memory registry and a fake clock; Restart()
// drops the manager and the store as a kill -9 would and opens both again
// over the same arena and registry.
class StreamHarness {
 public:
  StreamHarness() : store_(8 * kMiB) { EXPECT_TRUE(OpenManager().ok()); }

  absl::Status OpenManager() {
    reports_.clear();
    auto m = StreamManager::Open(&backend_, &store_.store(), &clock_, defaults_, &reports_);
    if (!m.ok()) return m.status();
    manager_ = std::move(*m);
    return absl::OkStatus();
  }
  absl::Status Restart() {
    manager_.reset();
    if (absl::Status s = store_.Reopen(); !s.ok()) return s;
    return OpenManager();
  }
  // The reconcile report of `name` from the last (re)start.
  ReconcileReport Report(const std::string& name) {
    for (const auto& [n, r] : reports_) {
      if (n == name) return r;
    }
    ADD_FAILURE() << "no report for " << name;
    return {};
  }

  Stream* Open(const std::string& name, wire::StreamOptions o = {}) {
    auto s = manager_->OpenStream(name, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : nullptr;
  }
  Stream* Find(const std::string& name) {
    auto s = manager_->Find(name);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : nullptr;
  }
  // Puts an object for `id` (holding Value(id, bytes)) and returns a ref to it.
  wire::SampleRef Put(const std::string& id, size_t bytes = 100, bool evictable = false) {
    auto g = store_.Put(kProducer, "obj/" + id, Value(id, bytes), evictable);
    EXPECT_TRUE(g.ok()) << g.status();
    wire::SampleRef r;
    r.set_sample_id(id);
    r.set_key("obj/" + id);
    r.set_generation(g.ok() ? *g : 0);
    return r;
  }
  absl::Status Commit(Stream* s, const Refs& refs, wire::StreamCommitReply* reply = nullptr,
                      const std::string& producer = "p", bool* blocked = nullptr) {
    wire::StreamCommit c;
    for (const auto& r : refs) *c.add_refs() = r;
    wire::StreamCommitReply local;
    bool local_blocked = false;
    return s->Commit(c, producer, reply ? reply : &local, blocked ? blocked : &local_blocked);
  }
  absl::Status LeaseReq(Stream* s, const wire::StreamLease& l, bool final, Refs* out,
                        bool* blocked) {
    wire::StreamLeaseReply reply;
    absl::Status st = s->Lease(l, final, &reply, blocked);
    out->assign(reply.refs().begin(), reply.refs().end());
    return st;
  }
  Refs Lease(Stream* s, uint32_t max, uint32_t index = 0, uint32_t count = 0) {
    wire::StreamLease l;
    l.set_max_refs(max);
    l.set_partition_index(index);
    l.set_partition_count(count);
    Refs out;
    bool blocked = false;
    EXPECT_TRUE(LeaseReq(s, l, /*final=*/true, &out, &blocked).ok());
    EXPECT_FALSE(blocked);
    return out;
  }
  template <typename Req>
  static void AddHandles(const Refs& refs, Req* req) {
    for (const auto& r : refs) {
      auto* h = req->add_refs();
      h->set_sample_id(r.sample_id());
      h->set_generation(r.generation());
      h->set_lease_id(r.lease_id());
    }
  }
  absl::Status Ack(Stream* s, const Refs& refs, std::optional<uint64_t> step, bool durable,
                   wire::StreamAckReply* reply = nullptr) {
    wire::StreamAck a;
    AddHandles(refs, &a);
    if (step) a.set_global_step(*step);
    a.set_optimizer_durable(durable);
    wire::StreamAckReply local;
    return s->Ack(a, reply ? reply : &local);
  }
  absl::Status Fail(Stream* s, const Refs& refs, bool retryable,
                    wire::StreamFailReply* reply = nullptr) {
    wire::StreamFail f;
    AddHandles(refs, &f);
    f.set_retryable(retryable);
    wire::StreamFailReply local;
    return s->Fail(f, reply ? reply : &local);
  }
  wire::StreamInfo Info(Stream* s) {
    wire::StreamInfo i;
    s->FillInfo(&i);
    return i;
  }
  // The registry's stream records, key → value.
  std::map<std::string, std::string> Ledger() {
    std::map<std::string, std::string> out;
    auto visit = [&](std::string_view k, std::string_view v) { return out.emplace(k, v), true; };
    EXPECT_TRUE(backend_.Scan(kLedgerRoot, visit).ok());
    return out;
  }
  uint64_t UsedBytes() { return store_.store().Stats().tiers[0].used_bytes; }
  uint64_t StoreLeases() { return store_.store().Stats().leases; }
  bool Exists(const wire::SampleRef& r) {
    auto st = store_.store().Stat(r.key());
    return st.ok() && st->generation == r.generation();
  }
  absl::StatusOr<std::string> Bytes(const wire::SampleRef& r) {
    return store_.GetValue(kProducer, r.key(), r.generation());
  }

  store::StoreHarness& store() { return store_; }
  registry::MemoryBackend& backend() { return backend_; }
  StreamManager& manager() { return *manager_; }
  FakeClock& clock() { return clock_; }
  StreamDefaults defaults_;

 private:
  store::StoreHarness store_;
  registry::MemoryBackend backend_;
  FakeClock clock_;
  std::unique_ptr<StreamManager> manager_;
  std::vector<std::pair<std::string, ReconcileReport>> reports_;
};

wire::StreamOptions Watermarks(uint64_t high, uint64_t low) {
  wire::StreamOptions o;
  o.set_high_watermark_bytes(high);
  o.set_low_watermark_bytes(low);
  return o;
}

// ---------------------------------------------------------------- commit

TEST(StreamTest, CommittedRefsAreLeasedInCommitOrder) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b"), h.Put("c")}).ok());
  auto got = h.Lease(s, 2);
  ASSERT_THAT(Ids(got), ElementsAre("a", "b"));
  EXPECT_EQ(got[0].nbytes(), 100u);
  EXPECT_EQ(got[0].deliveries(), 1u);
  EXPECT_NE(got[0].lease_id(), 0u);
  EXPECT_EQ(h.Info(s).depth(), 1u);
  EXPECT_EQ(h.Info(s).in_flight(), 2u);
}

TEST(StreamTest, RecommitOfACommittedSampleIsSkippedAsDuplicate) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto a = h.Put("a");
  ASSERT_TRUE(h.Commit(s, {a}).ok());
  wire::StreamCommitReply reply;
  ASSERT_TRUE(h.Commit(s, {a, h.Put("b")}, &reply).ok());
  EXPECT_EQ(reply.committed(), 1u);
  EXPECT_EQ(reply.duplicates(), 1u);
  EXPECT_EQ(h.Info(s).committed(), 2u);
  EXPECT_EQ(h.Info(s).depth(), 2u);
  EXPECT_EQ(h.StoreLeases(), 2u);  // one pin per sample, not per commit
}

TEST(StreamTest, DuplicateSampleIdWithinOneCommitIsCommittedOnce) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto a = h.Put("a");
  wire::StreamCommitReply reply;
  ASSERT_TRUE(h.Commit(s, {a, a, a}, &reply).ok());
  EXPECT_EQ(reply.committed(), 1u);
  EXPECT_EQ(reply.duplicates(), 2u);
  EXPECT_THAT(Ids(h.Lease(s, 10)), ElementsAre("a"));
  EXPECT_EQ(h.StoreLeases(), 1u);
}

TEST(StreamTest, CommitRetriedAfterRestartIsSkipped) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto a = h.Put("a");
  ASSERT_TRUE(h.Commit(s, {a}).ok());
  ASSERT_TRUE(h.Restart().ok());
  s = h.Find("t");
  wire::StreamCommitReply reply;
  ASSERT_TRUE(h.Commit(s, {a}, &reply).ok());
  EXPECT_EQ(reply.committed(), 0u);
  EXPECT_EQ(reply.duplicates(), 1u);
  EXPECT_EQ(h.Info(s).depth(), 1u);
  EXPECT_EQ(h.Info(s).committed(), 1u);
}

TEST(StreamTest, ProducerRetryAfterDyingBeforeCommitLeavesOneSampleAndNoOrphanedBytes) {
  StreamHarness h;
  Stream* s = h.Open("t");
  uint64_t base = h.UsedBytes();
  h.Put("a", 4096);  // written, then the producer died before committing
  uint64_t one = h.UsedBytes() - base;
  auto retry = h.Put("a", 4096);  // the retry writes again and commits
  EXPECT_EQ(h.UsedBytes() - base, one) << "the uncommitted generation must be superseded";
  wire::StreamCommitReply reply;
  ASSERT_TRUE(h.Commit(s, {retry}, &reply).ok());
  ASSERT_TRUE(h.Commit(s, {retry}, &reply).ok());  // and a second retry of the commit
  EXPECT_EQ(reply.duplicates(), 1u);
  EXPECT_EQ(h.Info(s).committed(), 1u);
  auto got = h.Lease(s, 10);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].generation(), retry.generation());
  ASSERT_TRUE(h.Ack(s, got, 1, true).ok());
  EXPECT_EQ(h.UsedBytes(), base);
}

// Commits `bad` (after a good ref) and expects `code`, with nothing committed
// and no pin left behind.
void ExpectCommitRejected(StreamHarness& h, wire::SampleRef bad, absl::StatusCode code,
                          const std::string& what) {
  Stream* s = h.Open("t");
  uint64_t leases = h.StoreLeases();
  auto ledger = h.Ledger();
  wire::StreamCommitReply reply;
  absl::Status st = h.Commit(s, {h.Put("good"), bad}, &reply);
  EXPECT_EQ(st.code(), code) << st;
  EXPECT_THAT(st.message(), HasSubstr(what));
  EXPECT_EQ(reply.committed(), 0u);
  EXPECT_EQ(h.Info(s).depth(), 0u);
  EXPECT_EQ(h.Info(s).committed(), 0u);
  EXPECT_EQ(h.Info(s).resident_bytes(), 0u);
  EXPECT_EQ(h.StoreLeases(), leases);
  EXPECT_EQ(h.Ledger(), ledger);
}

TEST(StreamTest, CommitRejectsAnEmptySampleId) {
  StreamHarness h;
  auto r = h.Put("x");
  r.set_sample_id("");
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "sample_id is empty");
}

TEST(StreamTest, CommitRejectsAnInvalidKey) {
  StreamHarness h;
  auto r = h.Put("x");
  r.set_key(std::string("k\0ey", 4));
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "NUL");
  r.set_key("");
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "'x'");
}

TEST(StreamTest, CommitRejectsGenerationZero) {
  StreamHarness h;
  auto r = h.Put("x");
  r.set_generation(0);
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "generation 0");
}

TEST(StreamTest, CommitOfAGenerationThatIsNotVisibleIsNotFoundAndLeavesNoPin) {
  StreamHarness h;
  auto old = h.Put("x");
  h.Put("x");  // a newer generation replaces it
  ExpectCommitRejected(h, old, absl::StatusCode::kNotFound, "'x'");
  auto missing = old;
  missing.set_key("obj/never-written");
  ExpectCommitRejected(h, missing, absl::StatusCode::kNotFound, "never-written");
}

TEST(StreamTest, CommitRejectsNbytesThatDisagreeWithTheObject) {
  StreamHarness h;
  auto r = h.Put("x", 100);
  r.set_nbytes(99);
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "holds 100");
  r.set_nbytes(100);  // the right size is accepted
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {r}).ok());
}

TEST(StreamTest, CommitRejectsMetadataOverFourKibOrThirtyTwoEntries) {
  StreamHarness h;
  auto r = h.Put("x");
  (*r.mutable_metadata())["blob"] = std::string(4096, 't');
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "tensor bytes belong");
  r.clear_metadata();
  for (int i = 0; i < 33; ++i) r.mutable_metadata()->insert({absl::StrCat("k", i), "v"});
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "33 metadata entries");
  r.mutable_metadata()->erase("k0");  // 32 entries of a few bytes are fine
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {r}).ok());
  EXPECT_EQ(h.Lease(s, 1)[0].metadata_size(), 32);
}

TEST(StreamTest, CommitRejectsAFeatureWithoutAValidDtype) {
  StreamHarness h;
  auto r = h.Put("x");
  auto* f = r.add_features();
  f->set_name("logits");
  f->set_dtype(wire::DTYPE_UNSPECIFIED);
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "no valid dtype");
  f->set_dtype(static_cast<wire::DType>(kMaxDType + 1));
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "no valid dtype");
}

TEST(StreamTest, CommitRejectsLeaseFieldsSetByTheProducer) {
  StreamHarness h;
  auto r = h.Put("x");
  r.set_lease_id(7);
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "set by lease");
  r.set_lease_id(0);
  r.set_deliveries(1);
  ExpectCommitRejected(h, r, absl::StatusCode::kInvalidArgument, "set by lease");
}

TEST(StreamTest, OneBadRefRejectsTheWholeCommitAndLeavesDepthUnchanged) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}).ok());
  auto bad = h.Put("bad");
  bad.set_generation(bad.generation() + 100);
  uint64_t leases = h.StoreLeases();
  EXPECT_EQ(h.Commit(s, {h.Put("b"), h.Put("c"), bad}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.Info(s).depth(), 1u);
  EXPECT_EQ(h.StoreLeases(), leases);
  EXPECT_THAT(Ids(h.Lease(s, 10)), ElementsAre("a"));
}

TEST(StreamTest, TwoSamplesNamingOneObjectAreRejected) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto a = h.Put("a");
  ASSERT_TRUE(h.Commit(s, {a}).ok());
  auto b = a;
  b.set_sample_id("b");
  absl::Status st = h.Commit(s, {b});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("already holds"));
  auto c = h.Put("c");
  auto d = c;
  d.set_sample_id("d");
  EXPECT_EQ(h.Commit(s, {c, d}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Info(s).depth(), 1u);
  // Once "a" is released its object is gone; a new put under the key may be committed.
  auto got = h.Lease(s, 1);
  ASSERT_TRUE(h.Ack(s, got, 1, true).ok());
  auto a2 = h.Put("a");
  a2.set_sample_id("a2");
  EXPECT_TRUE(h.Commit(s, {a2}).ok());
}

// ---------------------------------------------------------------- pins

TEST(StreamTest, CommittedObjectIsNeverEvicted) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto a = h.Put("a", 64 * 1024, /*evictable=*/true);
  ASSERT_TRUE(h.Commit(s, {a}).ok());
  for (int i = 0; i < 40; ++i) {  // 20 MiB of evictable objects through an 8 MiB arena
    ASSERT_TRUE(h.store()
                    .Put(kProducer, absl::StrCat("fill/", i), std::string(512 * 1024, 'f'),
                         /*evictable=*/true)
                    .ok());
  }
  EXPECT_GT(h.store().store().Stats().tiers[0].evictions, 0u);
  auto bytes = h.Bytes(a);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, Value("a", 64 * 1024));
}

TEST(StreamTest, DurablyAckedObjectIsFreedAndTheStoreReturnsToBaseline) {
  StreamHarness h;
  Stream* s = h.Open("t");
  uint64_t used = h.UsedBytes();
  ASSERT_TRUE(h.Commit(s, {h.Put("a", 10000), h.Put("b", 20000)}).ok());
  EXPECT_EQ(h.StoreLeases(), 2u);
  EXPECT_EQ(h.Info(s).resident_bytes(), 30000u);
  wire::StreamAckReply reply;
  ASSERT_TRUE(h.Ack(s, h.Lease(s, 10), 1, true, &reply).ok());
  EXPECT_EQ(reply.released(), 2u);
  EXPECT_EQ(h.store().store().Stat("obj/a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.UsedBytes(), used);
  EXPECT_EQ(h.StoreLeases(), 0u);
  EXPECT_EQ(h.Info(s).resident_bytes(), 0u);
  EXPECT_EQ(h.Info(s).acked(), 2u);
}

TEST(StreamTest, AKeyIsReusableOnlyAfterTheStreamReleasedItsSample) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto a = h.Put("a");
  ASSERT_TRUE(h.Commit(s, {a}).ok());
  // The producer reuses the key for something else: refused while held.
  EXPECT_EQ(h.store().Put(kProducer, a.key(), "x").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(h.Ack(s, h.Lease(s, 1), 1, true).ok());
  EXPECT_FALSE(h.Exists(a));
  auto newer = h.Put("a", 50);
  EXPECT_TRUE(h.Exists(newer));
}

// ---------------------------------------------------------------- lease

TEST(StreamTest, LeaseReturnsAtMostMaxLeaseRefs) {
  StreamHarness h;
  wire::StreamOptions o;
  o.set_max_lease_refs(3);
  Stream* s = h.Open("t", o);
  Refs refs;
  for (int i = 0; i < 5; ++i) refs.push_back(h.Put(absl::StrCat("s", i)));
  ASSERT_TRUE(h.Commit(s, refs).ok());
  EXPECT_THAT(Ids(h.Lease(s, 100)), ElementsAre("s0", "s1", "s2"));
  EXPECT_THAT(Ids(h.Lease(s, 100)), ElementsAre("s3", "s4"));
}

TEST(StreamTest, LeaseBelowMinRefsBlocksAndLeasesNothingUnlessFinal) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  wire::StreamLease l;
  l.set_max_refs(10);
  l.set_min_refs(3);
  Refs out;
  bool blocked = false;
  ASSERT_TRUE(h.LeaseReq(s, l, /*final=*/false, &out, &blocked).ok());
  EXPECT_TRUE(blocked);
  EXPECT_THAT(Ids(out), IsEmpty());
  EXPECT_EQ(h.Info(s).depth(), 2u);
  EXPECT_EQ(h.Info(s).in_flight(), 0u);
  ASSERT_TRUE(h.LeaseReq(s, l, /*final=*/true, &out, &blocked).ok());
  EXPECT_FALSE(blocked);
  EXPECT_THAT(Ids(out), ElementsAre("a", "b"));
  // A min_refs above max_refs asks for max_refs: it does not wait forever.
  ASSERT_TRUE(h.Commit(s, {h.Put("c"), h.Put("d")}).ok());
  l.set_max_refs(2);
  ASSERT_TRUE(h.LeaseReq(s, l, /*final=*/false, &out, &blocked).ok());
  EXPECT_FALSE(blocked);
  EXPECT_THAT(Ids(out), ElementsAre("c", "d"));
}

TEST(StreamTest, FinalLeaseOfAnEmptyStreamReturnsNothingAndCountsIt) {
  StreamHarness h;
  Stream* s = h.Open("t");
  EXPECT_THAT(Ids(h.Lease(s, 10)), IsEmpty());
  EXPECT_EQ(h.Info(s).consumer_empty(), 1u);
}

TEST(StreamTest, ExpiredLeaseIsLeasedAgainAndItsOldHandleCannotAck) {
  StreamHarness h;
  wire::StreamOptions o;
  o.set_lease_timeout_ms(1000);
  Stream* s = h.Open("t", o);
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}).ok());
  auto first = h.Lease(s, 1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(h.manager().NextLeaseExpiry(), h.clock().Now() + Ms(1000));
  h.clock().Advance(Ms(999));
  EXPECT_THAT(Ids(h.Lease(s, 1)), IsEmpty());  // not yet
  h.clock().Advance(Ms(2));
  auto second = h.Lease(s, 1);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].sample_id(), "a");
  EXPECT_EQ(second[0].deliveries(), 2u);
  EXPECT_NE(second[0].lease_id(), first[0].lease_id());
  EXPECT_EQ(h.Info(s).expired_leases(), 1u);
  absl::Status st = h.Ack(s, first, 1, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("leased again"));
  EXPECT_EQ(h.Info(s).in_flight(), 1u);
  EXPECT_TRUE(h.Ack(s, second, 1, true).ok());
}

// Issue 9, item 11: an ack that arrived after its lease's deadline was
// accepted unless some other request (a lease, an info) had run in between
// and reclaimed the lease. Expiry now applies before every ack and fail.
TEST(StreamTest, AnAckOrFailAfterTheDeadlineFailsWithNothingInBetween) {
  StreamHarness h;
  wire::StreamOptions o;
  o.set_lease_timeout_ms(1000);
  Stream* s = h.Open("t", o);
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto got = h.Lease(s, 2);
  ASSERT_EQ(got.size(), 2u);
  h.clock().Advance(Ms(1001));
  absl::Status st = h.Ack(s, {got[0]}, 1, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("expired"));
  st = h.Fail(s, {got[1]}, /*retryable=*/false);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  auto info = h.Info(s);
  EXPECT_EQ(info.acked(), 0u);
  EXPECT_EQ(info.dropped(), 0u);
  EXPECT_EQ(info.depth(), 2u);
  EXPECT_EQ(info.expired_leases(), 2u);
}

// Issue 9, item 11: after `stream reconcile`, a consumer still acking its
// old lease was told "the lease expired"; the error now names the reconcile.
TEST(StreamTest, AnAckOfALeaseEndedByReconcileNamesTheReconcile) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto got = h.Lease(s, 2);
  ASSERT_EQ(got.size(), 2u);
  ASSERT_TRUE(s->Reconcile().ok());
  ASSERT_TRUE(s->Reconcile().ok());  // a second run that changes nothing forgets nothing
  absl::Status st = h.Ack(s, {got[0]}, 1, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("ended by `stream reconcile`"));
  auto again = h.Lease(s, 1);
  ASSERT_EQ(again.size(), 1u);
  ASSERT_EQ(again[0].sample_id(), "a");
  st = h.Ack(s, {got[0]}, 1, true);  // the old lease, while a new one is current
  EXPECT_THAT(st.message(), HasSubstr("leased again"));
  EXPECT_THAT(st.message(), HasSubstr("reconcile"));
  EXPECT_TRUE(h.Ack(s, again, 1, true).ok());
}

TEST(StreamTest, ExpiredRefsReturnToTheQueueInCommitOrder) {
  StreamHarness h;
  wire::StreamOptions o;
  o.set_lease_timeout_ms(1000);
  Stream* s = h.Open("t", o);
  Refs refs;
  for (int i = 0; i < 8; ++i) refs.push_back(h.Put(absl::StrCat("s", i)));
  ASSERT_TRUE(h.Commit(s, refs).ok());
  ASSERT_EQ(h.Lease(s, 8).size(), 8u);
  h.clock().Advance(Ms(1001));
  EXPECT_EQ(Ids(h.Lease(s, 8)), Ids(refs));
}

TEST(StreamTest, LeaseHandleFromBeforeARestartCannotAckAfterIt) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}).ok());
  auto before = h.Lease(s, 1);
  ASSERT_TRUE(h.Restart().ok());
  s = h.Find("t");
  auto after = h.Lease(s, 1);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_NE(after[0].lease_id(), before[0].lease_id());
  EXPECT_EQ(h.Ack(s, before, 1, true).code(), absl::StatusCode::kFailedPrecondition);
}

// ---------------------------------------------------------------- partitions

Refs CommitMany(StreamHarness& h, Stream* s, int n, const std::string& prefix = "s") {
  Refs refs;
  for (int i = 0; i < n; ++i) refs.push_back(h.Put(absl::StrCat(prefix, i), 64));
  EXPECT_TRUE(h.Commit(s, refs).ok());
  return refs;
}

TEST(StreamTest, PartitionOfASampleIsStableAndEqualsThePartitionHashModCount) {
  StreamHarness h;
  Stream* s = h.Open("t");
  CommitMany(h, s, 40);
  for (uint32_t count : {2u, 3u, 5u}) {
    for (int round = 0; round < 2; ++round) {  // the same again after a requeue
      for (uint32_t i = 0; i < count; ++i) {
        for (const auto& r : h.Lease(s, 100, i, count)) {
          EXPECT_EQ(Stream::PartitionHash(r.sample_id()) % count, i) << r.sample_id();
        }
      }
      ASSERT_EQ(h.Info(s).depth(), 0u);
      ASSERT_TRUE(s->Reconcile().ok());
    }
  }
  EXPECT_EQ(Stream::PartitionHash("abc"), XXH64("abc", 3, 0));  // the documented hash
}

TEST(StreamTest, PartitionsAreDisjointAndCoverEverySample) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto refs = CommitMany(h, s, 50);
  std::multiset<std::string> seen;
  std::vector<size_t> sizes;
  for (uint32_t i = 0; i < 3; ++i) {
    auto got = h.Lease(s, 100, i, 3);
    sizes.push_back(got.size());
    for (const auto& r : got) seen.insert(r.sample_id());
  }
  auto all = Ids(refs);
  EXPECT_EQ(seen, std::multiset<std::string>(all.begin(), all.end()));
  for (size_t n : sizes) EXPECT_GT(n, 5u) << "50 samples over 3 partitions are roughly balanced";
}

TEST(StreamTest, ResplitFromTwoToThreeConsumersConsumesEverySampleExactlyOnce) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto refs = CommitMany(h, s, 60);
  std::map<std::string, int> acked;
  uint64_t step = 0;
  auto ack = [&](const Refs& got) {
    wire::StreamAckReply reply;
    ASSERT_TRUE(h.Ack(s, got, ++step, true, &reply).ok());
    EXPECT_EQ(reply.acked(), got.size());
    for (const auto& r : got) ++acked[r.sample_id()];
  };
  // Two consumers: each trains on part of a lease, then the job is re-split.
  for (uint32_t i = 0; i < 2; ++i) {
    auto got = h.Lease(s, 10, i, 2);
    ASSERT_EQ(got.size(), 10u);
    ack(Refs(got.begin(), got.begin() + 7));
  }
  ASSERT_EQ(h.Info(s).in_flight(), 6u);
  ASSERT_TRUE(s->Reconcile().ok());  // the old consumers' leases end
  // Three consumers until everything is consumed.
  for (bool more = true; more;) {
    more = false;
    for (uint32_t i = 0; i < 3; ++i) {
      auto got = h.Lease(s, 4, i, 3);
      for (const auto& r : got) {
        EXPECT_EQ(acked.count(r.sample_id()), 0u) << r.sample_id() << " leased after its ack";
      }
      if (!got.empty()) ack(got), more = true;
    }
  }
  EXPECT_EQ(acked.size(), refs.size());
  for (const auto& [id, n] : acked) EXPECT_EQ(n, 1) << id;
  EXPECT_EQ(h.Info(s).acked(), 60u);
  EXPECT_EQ(h.Info(s).resident_bytes(), 0u);
}

TEST(StreamTest, EmptyPartitionReturnsAtOnceWhenFinalAndDoesNotHoldUpOthers) {
  StreamHarness h;
  Stream* s = h.Open("t");
  Refs even;  // ids all in partition 0 of 2
  for (int i = 0; even.size() < 4; ++i) {
    std::string id = absl::StrCat("s", i);
    if (Stream::PartitionHash(id) % 2 == 0) even.push_back(h.Put(id));
  }
  ASSERT_TRUE(h.Commit(s, even).ok());
  wire::StreamLease l;
  l.set_max_refs(10);
  l.set_partition_index(1);
  l.set_partition_count(2);
  Refs out;
  bool blocked = false;
  ASSERT_TRUE(h.LeaseReq(s, l, /*final=*/false, &out, &blocked).ok());
  EXPECT_TRUE(blocked);  // a waiting lease would wait...
  ASSERT_TRUE(h.LeaseReq(s, l, /*final=*/true, &out, &blocked).ok());
  EXPECT_FALSE(blocked);  // ...but at its deadline returns empty
  EXPECT_THAT(Ids(out), IsEmpty());
  EXPECT_EQ(h.Lease(s, 10, 0, 2).size(), 4u);  // the other shard is unaffected
}

TEST(StreamTest, LeaseOfNoRefsOrAPartitionIndexNotBelowCountIsInvalidArgument) {
  StreamHarness h;
  Stream* s = h.Open("t");
  CommitMany(h, s, 3);
  wire::StreamLease l;
  l.set_max_refs(10);
  l.set_partition_index(2);
  l.set_partition_count(2);
  Refs out;
  bool blocked = false;
  EXPECT_EQ(h.LeaseReq(s, l, true, &out, &blocked).code(), absl::StatusCode::kInvalidArgument);
  l.set_partition_count(0);  // an index without a count
  EXPECT_EQ(h.LeaseReq(s, l, true, &out, &blocked).code(), absl::StatusCode::kInvalidArgument);
  l.set_partition_index(0);
  l.set_max_refs(0);
  EXPECT_EQ(h.LeaseReq(s, l, true, &out, &blocked).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Info(s).depth(), 3u);
}

// ---------------------------------------------------------------- ack

TEST(StreamTest, SecondAckOfTheSameRefCountsAsAlready) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}).ok());
  auto got = h.Lease(s, 1);
  wire::StreamAckReply reply;
  ASSERT_TRUE(h.Ack(s, got, 1, false, &reply).ok());
  EXPECT_EQ(reply.acked(), 1u);
  ASSERT_TRUE(h.Ack(s, got, 1, false, &reply).ok());  // awaiting the marker
  EXPECT_EQ(reply.acked(), 0u);
  EXPECT_EQ(reply.already(), 1u);
  ASSERT_TRUE(h.Ack(s, got, 1, true, &reply).ok());
  EXPECT_EQ(reply.released(), 1u);
  ASSERT_TRUE(h.Ack(s, got, 1, true, &reply).ok());  // released
  EXPECT_EQ(reply.acked(), 0u);
  EXPECT_EQ(reply.already(), 1u);
  EXPECT_EQ(reply.released(), 0u);
  EXPECT_EQ(h.Info(s).acked(), 1u);
}

TEST(StreamTest, AckOfAnUnknownSampleIsNotFound) {
  StreamHarness h;
  Stream* s = h.Open("t");
  wire::SampleRef r;
  r.set_sample_id("nope");
  absl::Status st = h.Ack(s, {r}, 1, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(st.message(), HasSubstr("nope"));
}

TEST(StreamTest, AckWithAStaleGenerationIsFailedPrecondition) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}).ok());
  auto got = h.Lease(s, 1);
  got[0].set_generation(got[0].generation() + 1);
  absl::Status st = h.Ack(s, got, 1, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("generation"));
  EXPECT_EQ(h.Info(s).in_flight(), 1u);
}

TEST(StreamTest, OneBadHandleRejectsTheWholeAck) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto got = h.Lease(s, 2);
  auto ledger = h.Ledger();
  auto bad = got;
  bad[1].set_lease_id(bad[1].lease_id() + 1);
  EXPECT_EQ(h.Ack(s, bad, 1, true).code(), absl::StatusCode::kFailedPrecondition);
  wire::SampleRef unknown;
  unknown.set_sample_id("zz");
  EXPECT_EQ(h.Ack(s, {got[0], unknown}, 1, true).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.Info(s).in_flight(), 2u);
  EXPECT_EQ(h.Info(s).acked(), 0u);
  EXPECT_FALSE(h.Info(s).has_durable_step());
  EXPECT_EQ(h.Ledger(), ledger);
  EXPECT_TRUE(h.Exists(got[0]));
}

TEST(StreamTest, AckOfADroppedSampleOrFailOfAnAckedOneIsFailedPrecondition) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto got = h.Lease(s, 2);
  ASSERT_TRUE(h.Fail(s, {got[0]}, /*retryable=*/false).ok());
  absl::Status st = h.Ack(s, {got[0]}, 1, true);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("dropped"));
  ASSERT_TRUE(h.Ack(s, {got[1]}, 1, false).ok());
  EXPECT_EQ(h.Fail(s, {got[1]}, false).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(h.Info(s).awaiting_durable(), 1u);
}

// ---------------------------------------------------------------- durable marker

TEST(StreamTest, NonDurableAckKeepsTheBytesUntilADurableAckCoversItsStep) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto got = h.Lease(s, 2);
  wire::StreamAckReply reply;
  ASSERT_TRUE(h.Ack(s, {got[0]}, 5, false, &reply).ok());
  EXPECT_EQ(reply.released(), 0u);
  auto info = h.Info(s);
  EXPECT_EQ(info.awaiting_durable(), 1u);
  EXPECT_EQ(info.in_flight(), 1u);
  EXPECT_EQ(info.resident_bytes(), 200u);
  EXPECT_EQ(info.global_step(), 5u);
  EXPECT_TRUE(h.Exists(got[0]));
  ASSERT_TRUE(h.Ack(s, {got[1]}, 4, true, &reply).ok());  // durable, but below 5
  EXPECT_EQ(reply.released(), 1u);                        // b only
  EXPECT_TRUE(h.Exists(got[0]));
  EXPECT_FALSE(h.Exists(got[1]));
  EXPECT_EQ(h.Info(s).durable_step(), 4u);
  ASSERT_TRUE(h.Ack(s, {}, 5, true, &reply).ok());  // a marker-only ack
  EXPECT_EQ(reply.released(), 1u);
  EXPECT_FALSE(h.Exists(got[0]));
  EXPECT_EQ(h.Info(s).resident_bytes(), 0u);
  EXPECT_EQ(h.Info(s).awaiting_durable(), 0u);
}

TEST(StreamTest, SteplessAcksAreReleasedByALaterSteplessDurableAck) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b"), h.Put("c"), h.Put("d")}).ok());
  auto got = h.Lease(s, 4);
  wire::StreamAckReply reply;
  ASSERT_TRUE(h.Ack(s, {got[0], got[1]}, std::nullopt, false, &reply).ok());
  EXPECT_EQ(h.Info(s).awaiting_durable(), 2u);
  ASSERT_TRUE(h.Ack(s, {got[2]}, 7, true, &reply).ok());  // a stepped marker: no cover
  EXPECT_EQ(reply.released(), 1u);
  EXPECT_EQ(h.Info(s).awaiting_durable(), 2u);
  ASSERT_TRUE(h.Ack(s, {}, std::nullopt, true, &reply).ok());
  EXPECT_EQ(reply.released(), 2u);
  EXPECT_FALSE(h.Exists(got[0]));
  EXPECT_FALSE(h.Exists(got[1]));
  // An ack after the step-less durable one is not covered by it.
  ASSERT_TRUE(h.Ack(s, {got[3]}, std::nullopt, false, &reply).ok());
  EXPECT_EQ(reply.released(), 0u);
  EXPECT_EQ(h.Info(s).awaiting_durable(), 1u);
  EXPECT_EQ(h.Info(s).resident_bytes(), 100u);
}

TEST(StreamTest, DurableAckOfStepSDoesNotReleaseAnotherRanksSampleAckedAtStepSPlusOne) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto rank_a = h.Lease(s, 1, 0, 0);
  auto rank_b = h.Lease(s, 1, 0, 0);
  ASSERT_TRUE(h.Ack(s, rank_b, 11, false).ok());  // B is already at step 11
  wire::StreamAckReply reply;
  ASSERT_TRUE(h.Ack(s, rank_a, 10, true, &reply).ok());  // A's checkpoint of step 10
  EXPECT_EQ(reply.released(), 1u);
  EXPECT_FALSE(h.Exists(rank_a[0]));
  EXPECT_TRUE(h.Exists(rank_b[0]));
  EXPECT_EQ(h.Info(s).awaiting_durable(), 1u);
  EXPECT_EQ(h.Info(s).global_step(), 11u);
  EXPECT_EQ(h.Info(s).durable_step(), 10u);
  ASSERT_TRUE(h.Restart().ok());  // the same after a crash: B's sample is requeued
  s = h.Find("t");
  EXPECT_EQ(h.Report("t").requeued, 1u);
  EXPECT_THAT(Ids(h.Lease(s, 10)), ElementsAre("b"));
}

// ---------------------------------------------------------------- restart and reconcile

// Rewrites the durable marker as an ack of `step` with optimizer_durable would,
// as if the process died after writing it and before releasing anything.
void WriteDurableStep(StreamHarness& h, const std::string& name, uint64_t step) {
  auto v = h.backend().Get(MarkerKey(name));
  ASSERT_TRUE(v.ok() && v->has_value());
  ledger::Marker m;
  ASSERT_TRUE(m.ParseFromString(**v));
  m.set_durable_step(step);
  registry::WriteBatch b;
  b.Put(MarkerKey(name), m.SerializeAsString());
  ASSERT_TRUE(h.backend().Apply(b).ok());
}

TEST(StreamTest, RestartReleasesAckedDurableSamplesWhoseReleaseWasInterrupted) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto got = h.Lease(s, 1);
  ASSERT_TRUE(h.Ack(s, got, 3, false).ok());
  WriteDurableStep(h, "t", 3);
  ASSERT_TRUE(h.Restart().ok());
  s = h.Find("t");
  ReconcileReport rep = h.Report("t");
  EXPECT_EQ(rep.released, 1u);
  EXPECT_EQ(rep.requeued, 1u);
  EXPECT_EQ(rep.lost, 0u);
  EXPECT_FALSE(h.Exists(got[0]));
  EXPECT_EQ(h.Info(s).acked(), 1u);
  EXPECT_THAT(Ids(h.Lease(s, 10)), ElementsAre("b"));
}

TEST(StreamTest, RestartRequeuesCommittedAndLeasedSamplesWithTheirBytes) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a", 300), h.Put("b", 400), h.Put("c", 500)}).ok());
  ASSERT_EQ(h.Lease(s, 2).size(), 2u);
  ASSERT_TRUE(h.Restart().ok());
  s = h.Find("t");
  EXPECT_EQ(h.Report("t").requeued, 3u);
  auto info = h.Info(s);
  EXPECT_EQ(info.depth(), 3u);
  EXPECT_EQ(info.in_flight(), 0u);
  EXPECT_EQ(info.resident_bytes(), 1200u);
  EXPECT_EQ(h.StoreLeases(), 3u);  // pinned again
  auto got = h.Lease(s, 10);
  ASSERT_THAT(Ids(got), ElementsAre("a", "b", "c"));
  for (const auto& r : got) {
    EXPECT_EQ(r.deliveries(), 1u);
    auto bytes = h.Bytes(r);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(*bytes, Value(r.sample_id(), r.nbytes()));
  }
}

TEST(StreamTest, RestartRequeuesAckedButNotDurableSamples) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}).ok());
  auto got = h.Lease(s, 1);
  ASSERT_TRUE(h.Ack(s, got, 1, false).ok());
  ASSERT_TRUE(h.Restart().ok());
  s = h.Find("t");
  EXPECT_EQ(h.Report("t").requeued, 1u);
  EXPECT_EQ(h.Info(s).awaiting_durable(), 0u);
  auto again = h.Lease(s, 1);
  ASSERT_THAT(Ids(again), ElementsAre("a"));
  EXPECT_EQ(*h.Bytes(again[0]), Value("a", 100));
  // A durable marker for step 1 now does not release it: it is leased again.
  wire::StreamAckReply reply;
  ASSERT_TRUE(h.Ack(s, {}, 1, true, &reply).ok());
  EXPECT_EQ(reply.released(), 0u);
  EXPECT_TRUE(h.Exists(again[0]));
}

TEST(StreamTest, SecondRestartChangesNothing) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b"), h.Put("c"), h.Put("d")}).ok());
  auto got = h.Lease(s, 3);
  ASSERT_TRUE(h.Ack(s, {got[0]}, 1, true).ok());
  ASSERT_TRUE(h.Ack(s, {got[1]}, 2, false).ok());
  ASSERT_TRUE(h.Restart().ok());
  auto ledger = h.Ledger();
  auto info = h.Info(h.Find("t"));
  ASSERT_TRUE(h.Restart().ok());
  EXPECT_EQ(h.Ledger(), ledger);
  ReconcileReport rep = h.Report("t");
  EXPECT_EQ(rep.released, 0u) << "nothing was left to free";
  EXPECT_EQ(rep.requeued, 3u);
  EXPECT_EQ(rep.lost, 0u);
  auto info2 = h.Info(h.Find("t"));
  info2.set_create_unix_ms(info.create_unix_ms());
  EXPECT_EQ(info2.SerializeAsString(), info.SerializeAsString());
  EXPECT_THAT(Ids(h.Lease(h.Find("t"), 10)), ElementsAre("b", "c", "d"));
}

TEST(StreamTest, ReconcileRequeuesLeasedAndAwaitingAndASecondRunChangesNothing) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b"), h.Put("c"), h.Put("d")}).ok());
  auto got = h.Lease(s, 3);
  ASSERT_TRUE(h.Ack(s, {got[0]}, 1, false).ok());
  auto rep = s->Reconcile();
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->requeued, 3u);
  EXPECT_EQ(rep->released, 0u);
  auto info = h.Info(s);
  EXPECT_EQ(info.depth(), 4u);
  EXPECT_EQ(info.in_flight(), 0u);
  EXPECT_EQ(info.awaiting_durable(), 0u);
  EXPECT_EQ(info.requeued(), 3u);
  auto ledger = h.Ledger();
  uint64_t epoch = s->epoch();
  rep = s->Reconcile();
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->requeued, 0u);
  EXPECT_EQ(h.Info(s).SerializeAsString(), info.SerializeAsString());
  EXPECT_EQ(h.Ledger(), ledger);
  EXPECT_EQ(s->epoch(), epoch);
  // Pending first, then the requeued ones in commit order.
  auto again = h.Lease(s, 10);
  EXPECT_THAT(Ids(again), ElementsAre("d", "a", "b", "c"));
  EXPECT_EQ(again[1].deliveries(), 2u);
  // The old handle of the once-acked sample no longer acks it.
  EXPECT_EQ(h.Ack(s, {got[0]}, 1, true).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(StreamTest, SampleWhoseObjectIsGoneAtRestartIsLostAndNeverDelivered) {
  StreamHarness h;
  Stream* s = h.Open("t");
  auto a = h.Put("a");
  ASSERT_TRUE(h.Commit(s, {a, h.Put("b")}).ok());
  // The stream holds the object, so only damage can take it: a stray write
  // makes it fail verification, and the restart quarantines it.
  h.store().CorruptForTest(a.key());
  ASSERT_TRUE(h.Restart().ok());
  s = h.Find("t");
  ReconcileReport rep = h.Report("t");
  EXPECT_EQ(rep.lost, 1u);
  EXPECT_EQ(rep.requeued, 1u);
  auto info = h.Info(s);
  EXPECT_EQ(info.lost(), 1u);
  EXPECT_EQ(info.depth(), 1u);
  EXPECT_EQ(info.resident_bytes(), 100u);
  EXPECT_THAT(Ids(h.Lease(s, 10)), ElementsAre("b"));
  wire::StreamCommitReply reply;
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}, &reply).ok());
  EXPECT_EQ(reply.duplicates(), 1u);
  ASSERT_TRUE(h.Restart().ok());  // recorded as lost once, not again
  EXPECT_EQ(h.Report("t").lost, 0u);
  EXPECT_EQ(h.Info(h.Find("t")).lost(), 1u);
}

// ---------------------------------------------------------------- registry failures

TEST(StreamTest, CommitThatTheRegistryRejectsChangesNothingAndLeavesNoPins) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}).ok());
  uint64_t leases = h.StoreLeases();
  auto b = h.Put("b");
  h.backend().FailWritesForTest(absl::UnavailableError("disk gone"));
  absl::Status st = h.Commit(s, {b});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(st.message(), HasSubstr("disk gone"));
  EXPECT_EQ(h.Info(s).depth(), 1u);
  EXPECT_EQ(h.Info(s).committed(), 1u);
  EXPECT_EQ(h.StoreLeases(), leases);
  h.backend().FailWritesForTest(absl::OkStatus());
  wire::StreamCommitReply reply;
  ASSERT_TRUE(h.Commit(s, {b}, &reply).ok());  // the producer's retry is not a duplicate
  EXPECT_EQ(reply.committed(), 1u);
}

TEST(StreamTest, AckThatTheRegistryRejectsKeepsTheRefsInFlightUntilRetried) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto got = h.Lease(s, 2);
  h.backend().FailWritesForTest(absl::UnavailableError("disk gone"));
  EXPECT_EQ(h.Ack(s, got, 1, true).code(), absl::StatusCode::kUnavailable);
  auto info = h.Info(s);
  EXPECT_EQ(info.in_flight(), 2u);
  EXPECT_EQ(info.awaiting_durable(), 0u);
  EXPECT_EQ(info.acked(), 0u);
  EXPECT_FALSE(info.has_global_step());
  EXPECT_TRUE(h.Exists(got[0]));
  h.backend().FailWritesForTest(absl::OkStatus());
  wire::StreamAckReply reply;
  ASSERT_TRUE(h.Ack(s, got, 1, true, &reply).ok());
  EXPECT_EQ(reply.acked(), 2u);
  EXPECT_EQ(reply.released(), 2u);
}

TEST(StreamTest, DropThatTheRegistryRejectsDropsNothing) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}).ok());
  auto got = h.Lease(s, 1);
  h.backend().FailWritesForTest(absl::UnavailableError("disk gone"));
  EXPECT_EQ(h.Fail(s, got, /*retryable=*/false).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(h.Info(s).in_flight(), 1u);
  EXPECT_EQ(h.Info(s).dropped(), 0u);
  EXPECT_TRUE(h.Exists(got[0]));
  wire::StreamFailReply reply;  // a retryable fail writes nothing and still works
  ASSERT_TRUE(h.Fail(s, got, /*retryable=*/true, &reply).ok());
  EXPECT_EQ(reply.requeued(), 1u);
}

TEST(StreamTest, LedgerAfterFailedWritesMatchesMemoryBeforeThem) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b"), h.Put("c")}).ok());
  auto got = h.Lease(s, 3);
  ASSERT_TRUE(h.Ack(s, {got[0]}, 1, false).ok());
  auto ledger = h.Ledger();
  auto info = h.Info(s);
  auto d = h.Put("d");
  h.backend().FailWritesForTest(absl::UnavailableError("disk gone"));
  EXPECT_FALSE(h.Commit(s, {d}).ok());
  EXPECT_FALSE(h.Ack(s, {got[1]}, 1, true).ok());
  EXPECT_FALSE(h.Fail(s, {got[2]}, false).ok());
  EXPECT_FALSE(s->Reconcile().ok());
  EXPECT_EQ(h.Info(s).SerializeAsString(), info.SerializeAsString());
  EXPECT_EQ(h.Ledger(), ledger);
  h.backend().FailWritesForTest(absl::OkStatus());
  ASSERT_TRUE(h.Restart().ok());
  s = h.Find("t");
  EXPECT_EQ(h.Report("t").requeued, 3u);
  auto after = h.Info(s);
  EXPECT_EQ(after.committed(), 3u);
  EXPECT_EQ(after.depth(), 3u);
  EXPECT_EQ(after.global_step(), 1u);
  EXPECT_FALSE(after.has_durable_step());
  EXPECT_EQ(after.dropped(), 0u);
  EXPECT_THAT(Ids(h.Lease(s, 10)), ElementsAre("a", "b", "c"));
}

// ---------------------------------------------------------------- fail

TEST(StreamTest, RetryableFailGoesToTheTailAfterPendingRefs) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b"), h.Put("c")}).ok());
  auto got = h.Lease(s, 1);
  wire::StreamFailReply reply;
  ASSERT_TRUE(h.Fail(s, got, true, &reply).ok());
  EXPECT_EQ(reply.requeued(), 1u);
  EXPECT_EQ(h.Info(s).requeued(), 1u);
  EXPECT_EQ(h.Info(s).resident_bytes(), 300u);
  auto again = h.Lease(s, 3);
  EXPECT_THAT(Ids(again), ElementsAre("b", "c", "a"));
  EXPECT_EQ(again[2].deliveries(), 2u);
  EXPECT_EQ(h.Fail(s, got, true).code(), absl::StatusCode::kFailedPrecondition);  // old lease
}

TEST(StreamTest, NonRetryableFailDropsTheSampleAndFreesItsObject) {
  StreamHarness h;
  Stream* s = h.Open("t");
  uint64_t used = h.UsedBytes();
  ASSERT_TRUE(h.Commit(s, {h.Put("a", 5000)}).ok());
  auto got = h.Lease(s, 1);
  wire::StreamFailReply reply;
  ASSERT_TRUE(h.Fail(s, got, false, &reply).ok());
  EXPECT_EQ(reply.dropped(), 1u);
  EXPECT_FALSE(h.Exists(got[0]));
  EXPECT_EQ(h.UsedBytes(), used);
  auto info = h.Info(s);
  EXPECT_EQ(info.dropped(), 1u);
  EXPECT_EQ(info.resident_bytes(), 0u);
  EXPECT_EQ(info.in_flight(), 0u);
  wire::StreamCommitReply commit;
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}, &commit).ok());
  EXPECT_EQ(commit.duplicates(), 1u);
  ASSERT_TRUE(h.Restart().ok());  // still dropped after a restart
  s = h.Find("t");
  EXPECT_EQ(h.Info(s).dropped(), 1u);
  EXPECT_THAT(Ids(h.Lease(s, 10)), IsEmpty());
  ASSERT_TRUE(h.Commit(s, {h.Put("a")}, &commit).ok());
  EXPECT_EQ(commit.duplicates(), 1u);
}

// ---------------------------------------------------------------- backpressure

TEST(StreamTest, CommitsPauseOnceResidentBytesReachTheHighWatermark) {
  StreamHarness h;
  Stream* s = h.Open("t", Watermarks(1000, 500));
  for (const char* id : {"a", "b", "c", "d"}) {
    ASSERT_TRUE(h.Commit(s, {h.Put(id, 300)}).ok()) << id;  // 300 .. 1200
  }
  EXPECT_TRUE(h.Info(s).paused());
  bool blocked = false;
  wire::StreamCommitReply reply;
  absl::Status st = h.Commit(s, {h.Put("e", 300)}, &reply, "p", &blocked);
  EXPECT_TRUE(blocked);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(st.message(), HasSubstr("1200"));
  EXPECT_THAT(st.message(), HasSubstr("1000"));
  EXPECT_THAT(st.message(), HasSubstr("500"));
  EXPECT_EQ(h.Info(s).depth(), 4u);
  EXPECT_EQ(h.Info(s).resident_bytes(), 1200u);
  // A producer's retry of a commit that went through is not held up.
  auto retry = h.Lease(s, 1)[0];
  retry.clear_lease_id();
  retry.clear_deliveries();
  ASSERT_TRUE(h.Commit(s, {retry}, &reply, "p", &blocked).ok());
  EXPECT_FALSE(blocked);
  EXPECT_EQ(reply.duplicates(), 1u);
}

TEST(StreamTest, PausedStreamResumesOnlyBelowTheLowWatermark) {
  StreamHarness h;
  Stream* s = h.Open("t", Watermarks(1000, 500));
  Refs refs;
  for (const char* id : {"a", "b", "c", "d"}) refs.push_back(h.Put(id, 300));
  ASSERT_TRUE(h.Commit(s, refs).ok());  // 1200
  bool blocked = false;
  ASSERT_TRUE(h.Ack(s, h.Lease(s, 2), 1, true).ok());  // 600: between low and high
  EXPECT_TRUE(h.Info(s).paused());
  EXPECT_EQ(h.Commit(s, {h.Put("e", 10)}, nullptr, "p", &blocked).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(blocked);
  ASSERT_TRUE(h.Ack(s, h.Lease(s, 1), 2, true).ok());  // 300: below low
  EXPECT_FALSE(h.Info(s).paused());
  ASSERT_TRUE(h.Commit(s, {h.Put("e", 10)}, nullptr, "p", &blocked).ok());
  EXPECT_FALSE(blocked);
}

TEST(StreamTest, ProducerAtItsInFlightCapIsBlockedButAnotherProducerIsNot) {
  StreamHarness h;
  wire::StreamOptions o;
  o.set_max_in_flight_per_producer(2);
  Stream* s = h.Open("t", o);
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}, nullptr, "p").ok());
  bool blocked = false;
  absl::Status st = h.Commit(s, {h.Put("c")}, nullptr, "p", &blocked);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(blocked);
  EXPECT_THAT(st.message(), HasSubstr("'p' has 2 unacked"));
  ASSERT_TRUE(h.Commit(s, {h.Put("c")}, nullptr, "q", &blocked).ok());
  EXPECT_FALSE(blocked);
  // An ack (durable or not) frees p's slot, and wakes whoever waits on it.
  uint64_t epoch = s->epoch();
  ASSERT_TRUE(h.Ack(s, h.Lease(s, 1), 1, false).ok());
  EXPECT_NE(s->epoch(), epoch);
  ASSERT_TRUE(h.Commit(s, {h.Put("d")}, nullptr, "p", &blocked).ok());
}

TEST(StreamTest, CommitLargerThanTheInFlightCapIsInvalidArgument) {
  StreamHarness h;
  wire::StreamOptions o;
  o.set_max_in_flight_per_producer(2);
  Stream* s = h.Open("t", o);
  bool blocked = false;
  absl::Status st = h.Commit(s, {h.Put("a"), h.Put("b"), h.Put("c")}, nullptr, "p", &blocked);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(blocked);
  EXPECT_EQ(h.Info(s).depth(), 0u);
}

TEST(StreamTest, InFlightCountSurvivesARestart) {
  StreamHarness h;
  wire::StreamOptions o;
  o.set_max_in_flight_per_producer(2);
  Stream* s = h.Open("t", o);
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}, nullptr, "p").ok());
  ASSERT_TRUE(h.Restart().ok());
  bool blocked = false;
  EXPECT_EQ(h.Commit(h.Find("t"), {h.Put("c")}, nullptr, "p", &blocked).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(blocked);
}

// ---------------------------------------------------------------- options and names

TEST(StreamTest, LowWatermarkAboveHighIsRejectedAndNothingChanges) {
  StreamHarness h;
  EXPECT_EQ(h.manager().OpenStream("new", Watermarks(100, 200)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.manager().Find("new").status().code(), absl::StatusCode::kNotFound);
  Stream* s = h.Open("t", Watermarks(1000, 500));
  auto ledger = h.Ledger();
  auto before = h.Info(s).options().SerializeAsString();
  absl::Status st = h.manager().OpenStream("t", Watermarks(1000, 2000)).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("2000"));
  EXPECT_EQ(h.Info(s).options().SerializeAsString(), before);
  EXPECT_EQ(h.Ledger(), ledger);
}

TEST(StreamTest, ReopenWithNewOptionsUpdatesThemDurably) {
  StreamHarness h;
  Stream* s = h.Open("t");
  EXPECT_EQ(h.Info(s).options().lease_timeout_ms(), 60000u);
  wire::StreamOptions o;
  o.set_lease_timeout_ms(5000);
  o.set_high_watermark_bytes(1000);  // low defaults to 80% of it
  ASSERT_EQ(h.Open("t", o), s);
  ASSERT_TRUE(h.Restart().ok());
  auto opts = h.Info(h.Find("t")).options();
  EXPECT_EQ(opts.lease_timeout_ms(), 5000u);
  EXPECT_EQ(opts.high_watermark_bytes(), 1000u);
  EXPECT_EQ(opts.low_watermark_bytes(), 800u);
  EXPECT_EQ(opts.max_lease_refs(), 4096u);
  ASSERT_TRUE(h.Commit(h.Find("t"), {h.Put("a")}).ok());
  h.Lease(h.Find("t"), 1);
  EXPECT_EQ(h.manager().NextLeaseExpiry(), h.clock().Now() + Ms(5000));
}

TEST(StreamTest, InvalidStreamNamesAreRejected) {
  StreamHarness h;
  for (std::string bad : {std::string(), std::string("a/b"), std::string("has space"),
                          std::string(129, 'n'), std::string("caf\xc3\xa9"), std::string("..\n")}) {
    EXPECT_EQ(h.manager().OpenStream(bad, {}).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
    EXPECT_EQ(h.manager().Find(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(h.manager().OpenStream("Ok.name-1_x", {}).ok());
  EXPECT_TRUE(h.manager().OpenStream(std::string(128, 'n'), {}).ok());
  EXPECT_THAT(h.Ledger(), ::testing::SizeIs(4));  // meta and marker of the two
}

// ---------------------------------------------------------------- model test

// A reference model of one stream: where each sample is, the queue order and
// the durable marker, updated by the same rules the contract states.
struct Model {
  enum class St { kPending, kLeased, kAwaiting, kReleased, kDropped, kLost };
  struct Sample {
    wire::SampleRef ref;  // as committed, nbytes filled in
    uint64_t seq = 0;
    St st = St::kPending;
    wire::SampleRef lease;  // the last lease reply
    Clock::TimePoint deadline;
    std::optional<uint64_t> step;
    uint64_t ack_seq = 0;
    uint32_t deliveries = 0;
    bool vanished = false;
  };
  std::map<std::string, Sample> samples;
  std::vector<std::string> queue;
  std::optional<uint64_t> durable_step;
  uint64_t durable_ack_seq = 0, next_ack_seq = 1, next_seq = 1;
  std::vector<wire::SampleRef> old_leases;  // handles of leases that ended

  bool Live(const Sample& s) const {
    return s.st == St::kPending || s.st == St::kLeased || s.st == St::kAwaiting;
  }
  // Back to the tail, in (deadline, commit) order; a leased one's lease ends.
  void Requeue(std::vector<Sample*> v, bool by_deadline) {
    std::sort(v.begin(), v.end(), [&](const Sample* a, const Sample* b) {
      if (by_deadline && a->deadline != b->deadline) return a->deadline < b->deadline;
      return a->seq < b->seq;
    });
    for (Sample* s : v) {
      if (s->st == St::kLeased) old_leases.push_back(s->lease);
      s->st = St::kPending;
      s->step.reset();
      s->ack_seq = 0;
      queue.push_back(s->ref.sample_id());
    }
  }
  uint64_t ReleaseCovered() {
    uint64_t n = 0;
    for (auto& [id, s] : samples) {
      if (s.st != St::kAwaiting) continue;
      bool covered =
          s.step ? durable_step && *s.step <= *durable_step : s.ack_seq <= durable_ack_seq;
      if (covered) s.st = St::kReleased, ++n;
    }
    return n;
  }
};

void CheckModel(StreamHarness& h, Stream* s, const Model& m) {
  auto info = h.Info(s);
  uint64_t counts[6] = {}, resident = 0;
  for (const auto& [id, x] : m.samples) {
    ++counts[static_cast<int>(x.st)];
    if (m.Live(x)) resident += x.ref.nbytes();
  }
  ASSERT_EQ(counts[0], m.queue.size());
  ASSERT_EQ(info.depth(), counts[0]);
  ASSERT_EQ(info.in_flight(), counts[1]);
  ASSERT_EQ(info.awaiting_durable(), counts[2]);
  ASSERT_EQ(info.acked(), counts[3]);
  ASSERT_EQ(info.dropped(), counts[4]);
  ASSERT_EQ(info.lost(), counts[5]);
  ASSERT_EQ(info.committed(), m.samples.size());
  ASSERT_EQ(info.resident_bytes(), resident);
  ASSERT_EQ(h.StoreLeases(), counts[0] + counts[1] + counts[2]) << "one pin per live sample";
}

template <typename T>
T Pick(std::mt19937_64& rng, const std::vector<T>& v) {
  return v[rng() % v.size()];
}

void RunModel(uint64_t seed, int ops) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  StreamHarness h;
  wire::StreamOptions o;
  o.set_lease_timeout_ms(1000);
  o.set_max_lease_refs(5);
  Stream* s = h.Open("m", o);
  const uint64_t base_used = h.UsedBytes();
  Model m;
  using St = Model::St;
  int next_id = 0;
  uint64_t step = 0;
  auto handles_of = [&](St st) {
    Refs out;
    for (const auto& [id, x] : m.samples) {
      if (x.st == st) out.push_back(x.lease);
    }
    return out;
  };
  auto some = [&](Refs v, size_t most) {
    std::shuffle(v.begin(), v.end(), rng);
    v.resize(std::min<size_t>(v.size(), 1 + rng() % most));
    return v;
  };
  auto commit = [&](bool registry_down) {
    Refs refs;
    std::vector<std::string> fresh;
    uint32_t dups = 0;
    for (int k = 1 + rng() % 3; k > 0; --k) {
      if (!m.samples.empty() && rng() % 5 == 0) {
        std::vector<std::string> ids;
        for (const auto& [id, x] : m.samples) ids.push_back(id);
        refs.push_back(m.samples[Pick(rng, ids)].ref), ++dups;
        refs.back().set_nbytes(0);
      } else {
        std::string id = absl::StrCat("s", next_id++);
        refs.push_back(h.Put(id, 64 + rng() % 2000));
        fresh.push_back(id);
        if (rng() % 8 == 0) refs.push_back(refs.back()), ++dups;
      }
    }
    wire::StreamCommitReply reply;
    absl::Status st = h.Commit(s, refs, &reply);
    if (registry_down && !fresh.empty()) {
      ASSERT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
      CheckModel(h, s, m);
      h.backend().FailWritesForTest(absl::OkStatus());
      st = h.Commit(s, refs, &reply);  // the producer retries
    }
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(reply.committed(), fresh.size());
    ASSERT_EQ(reply.duplicates(), dups);
    for (const auto& id : fresh) {
      auto& x = m.samples[id];
      for (const auto& r : refs) {
        if (r.sample_id() == id) x.ref = r;
      }
      x.ref.set_nbytes(h.store().store().Stat(x.ref.key())->size);
      x.seq = m.next_seq++;
      m.queue.push_back(id);
    }
  };
  auto ack = [&](bool registry_down) {
    Refs handles = handles_of(St::kLeased);
    if (!handles.empty()) handles = some(handles, 4);
    if (rng() % 5 == 0) handles.clear();  // a marker-only ack
    size_t fresh = handles.size();
    uint32_t already = 0;
    for (St st : {St::kAwaiting, St::kReleased}) {
      auto done = handles_of(st);
      if (!done.empty() && rng() % 4 == 0) handles.push_back(Pick(rng, done)), ++already;
    }
    std::optional<uint64_t> at;
    if (rng() % 3) {
      step += rng() % 2;
      at = step + 1 - std::min<uint64_t>(step, rng() % 3);  // sometimes out of order
    }
    bool durable = rng() % 3 == 0;
    wire::StreamAckReply reply;
    absl::Status st = h.Ack(s, handles, at, durable, &reply);
    if (registry_down) {
      ASSERT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
      return;  // nothing changed: checked next
    }
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(reply.acked(), fresh);
    ASSERT_EQ(reply.already(), already);
    uint64_t seq = m.next_ack_seq++;
    for (size_t i = 0; i < fresh; ++i) {
      auto& x = m.samples[handles[i].sample_id()];
      x.st = St::kAwaiting, x.step = at, x.ack_seq = seq;
    }
    if (durable && at) m.durable_step = std::max(m.durable_step.value_or(0), *at);
    if (durable && !at) m.durable_ack_seq = seq;
    ASSERT_EQ(reply.released(), m.ReleaseCovered());
  };
  auto lease = [&] {
    uint32_t max = 1 + rng() % 7, count = rng() % 2 ? 0 : 1 + rng() % 3;
    uint32_t index = count ? rng() % count : 0;
    std::vector<std::string> want;
    for (const auto& id : m.queue) {
      if (want.size() < std::min(max, 5u) &&
          (count == 0 || Stream::PartitionHash(id) % count == index)) {
        want.push_back(id);
      }
    }
    auto got = h.Lease(s, max, index, count);
    ASSERT_EQ(Ids(got), want);
    for (const auto& r : got) {
      auto& x = m.samples[r.sample_id()];
      ASSERT_EQ(x.st, St::kPending) << "a " << static_cast<int>(x.st) << " sample leased";
      ASSERT_EQ(r.deliveries(), ++x.deliveries);
      ASSERT_EQ(r.nbytes(), x.ref.nbytes());
      x.st = St::kLeased, x.lease = r;
      x.deadline = h.clock().Now() + Ms(1000);
      m.queue.erase(std::find(m.queue.begin(), m.queue.end(), r.sample_id()));
    }
  };
  for (int op = 0; op < ops; ++op) {
    SCOPED_TRACE(::testing::Message() << "op " << op);
    int dice = rng() % 100;
    if (dice < 22) {
      commit(false);
    } else if (dice < 42) {
      lease();
    } else if (dice < 62) {
      ack(false);
    } else if (dice < 70) {  // fail
      Refs handles = handles_of(St::kLeased);
      if (handles.empty()) continue;
      handles = some(handles, 3);
      bool retry = rng() % 3 != 0;
      wire::StreamFailReply reply;
      ASSERT_TRUE(h.Fail(s, handles, retry, &reply).ok());
      ASSERT_EQ(retry ? reply.requeued() : reply.dropped(), handles.size());
      for (const auto& hd : handles) {
        auto& x = m.samples[hd.sample_id()];
        retry ? m.Requeue({&x}, false) : void(x.st = St::kDropped);
      }
    } else if (dice < 78) {  // time passes; expired leases go back
      h.clock().Advance(Ms(rng() % 700));
      std::vector<Model::Sample*> expired;
      for (auto& [id, x] : m.samples) {
        if (x.st == St::kLeased && x.deadline <= h.clock().Now()) expired.push_back(&x);
      }
      m.Requeue(expired, true);
    } else if (dice < 82) {  // kill -9 and restart
      ASSERT_TRUE(h.Restart().ok());
      s = h.Find("m");
      std::vector<Model::Sample*> back;
      uint64_t lost = 0;
      for (auto& [id, x] : m.samples) {
        if (!m.Live(x)) continue;
        if (x.vanished) {
          x.st = St::kLost, ++lost;
        } else {
          x.deliveries = 0;
          back.push_back(&x);
        }
      }
      m.queue.clear();
      m.Requeue(back, false);
      ReconcileReport rep = h.Report("m");
      ASSERT_EQ(rep.requeued, back.size());
      ASSERT_EQ(rep.lost, lost);
      ASSERT_EQ(rep.released, 0u);
    } else if (dice < 87) {  // the consumer side restarted
      std::vector<Model::Sample*> back;
      for (auto& [id, x] : m.samples) {
        if (x.st == St::kLeased || x.st == St::kAwaiting) back.push_back(&x);
      }
      auto rep = s->Reconcile();
      ASSERT_TRUE(rep.ok()) << rep.status();
      ASSERT_EQ(rep->requeued, back.size());
      m.Requeue(back, false);
    } else if (dice < 90) {  // a stray write damages a sample's object: lost at the next restart
      std::vector<std::string> ids;
      for (const auto& [id, x] : m.samples) {
        if (m.Live(x) && !x.vanished) ids.push_back(id);
      }
      if (ids.empty()) continue;
      auto& x = m.samples[Pick(rng, ids)];
      h.store().CorruptForTest(x.ref.key());
      x.vanished = true;
    } else if (dice < 95) {  // the registry fails one write
      h.backend().FailWritesForTest(absl::UnavailableError("injected"));
      rng() % 2 ? commit(true) : ack(true);
      h.backend().FailWritesForTest(absl::OkStatus());
    } else {  // a handle of an ended lease never acks or fails
      std::vector<wire::SampleRef> stale;
      for (const auto& r : m.old_leases) {
        const auto& x = m.samples[r.sample_id()];
        if (x.st == St::kPending || (x.st == St::kLeased && x.lease.lease_id() != r.lease_id())) {
          stale.push_back(r);
        }
      }
      if (stale.empty()) continue;
      auto r = Pick(rng, stale);
      ASSERT_EQ(h.Ack(s, {r}, step, true).code(), absl::StatusCode::kFailedPrecondition);
      ASSERT_EQ(h.Fail(s, {r}, rng() % 2).code(), absl::StatusCode::kFailedPrecondition);
    }
    if (::testing::Test::HasFatalFailure()) return;
    CheckModel(h, s, m);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Drain: everything live is leased and durably acked; the store is back
  // where it started.
  ASSERT_TRUE(s->Reconcile().ok());
  for (Refs got; !(got = h.Lease(s, 5)).empty();) {
    for (const auto& r : got) ASSERT_NE(m.samples[r.sample_id()].st, St::kReleased);
    ASSERT_TRUE(h.Ack(s, got, step + 1, true).ok());
  }
  auto info = h.Info(s);
  EXPECT_EQ(info.depth() + info.in_flight() + info.awaiting_durable(), 0u);
  EXPECT_EQ(info.resident_bytes(), 0u);
  EXPECT_EQ(info.acked() + info.dropped() + info.lost(), m.samples.size());
  EXPECT_EQ(h.StoreLeases(), 0u);
  EXPECT_EQ(h.store().store().Stats().objects, 0u);
  // Damaged objects a restart quarantined are kept for the operator; freed,
  // the store is back where it started.
  for (const auto& q : h.store().store().Quarantined()) {
    ASSERT_TRUE(h.store().store().RemoveQuarantined(q.tier, q.block_offset).ok());
  }
  EXPECT_EQ(h.UsedBytes(), base_used);
}

TEST(StreamModelTest, RandomOperationsKeepEverySampleInExactlyOnePlace) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    RunModel(seed, 300);
    if (HasFatalFailure() || HasNonfatalFailure()) break;
  }
}

TEST(StreamTest, AnObjectTheStreamHoldsCannotBeRemovedOrReplaced) {
  StreamHarness h;
  Stream* s = h.Open("st");
  wire::SampleRef r = h.Put("a");
  ASSERT_TRUE(h.Commit(s, {r}).ok());
  auto removed = h.store().store().Remove(r.key(), 0);
  EXPECT_EQ(removed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(removed.status().message(), HasSubstr("stream 'st'"));
  auto replaced = h.store().Put(kProducer, r.key(), "other");
  EXPECT_EQ(replaced.status().code(), absl::StatusCode::kFailedPrecondition);
  // Released, the object goes as before.
  Refs leased = h.Lease(s, 1);
  ASSERT_EQ(leased.size(), 1u);
  wire::StreamAck ack;
  StreamHarness::AddHandles(leased, &ack);
  ack.set_optimizer_durable(true);
  wire::StreamAckReply reply;
  ASSERT_TRUE(s->Ack(ack, &reply).ok());
  EXPECT_EQ(reply.released(), 1u);
  EXPECT_EQ(h.store().store().Stat(r.key()).status().code(), absl::StatusCode::kNotFound);
}

TEST(StreamTest, AdoptVisibleCommitsWhateverGenerationIsVisibleAndReportsIt) {
  StreamHarness h;
  Stream* s = h.Open("st");
  wire::SampleRef r = h.Put("a");
  uint64_t visible = r.generation();
  wire::StreamCommit c;
  wire::SampleRef adopt = r;
  adopt.set_generation(0);
  *c.add_refs() = adopt;
  wire::StreamCommitReply reply;
  bool blocked = false;
  // Without the flag generation 0 is refused and nothing changes.
  EXPECT_EQ(s->Commit(c, "p", &reply, &blocked).code(), absl::StatusCode::kInvalidArgument);
  c.set_adopt_visible(true);
  ASSERT_TRUE(s->Commit(c, "p", &reply, &blocked).ok());
  EXPECT_EQ(reply.committed(), 1u);
  ASSERT_EQ(reply.held_size(), 1);
  EXPECT_EQ(reply.held(0).generation(), visible);
  EXPECT_EQ(reply.held(0).nbytes(), 100u);
  // A second producer's commit of its own generation of the same sample id is
  // a duplicate, and the reply names the held generation so it can tidy up.
  wire::StreamCommit again;
  wire::SampleRef other = r;
  other.set_generation(visible + 1000);
  *again.add_refs() = other;
  wire::StreamCommitReply reply2;
  ASSERT_TRUE(s->Commit(again, "q", &reply2, &blocked).ok());
  EXPECT_EQ(reply2.duplicates(), 1u);
  ASSERT_EQ(reply2.held_size(), 1);
  EXPECT_EQ(reply2.held(0).generation(), visible);
  Refs leased = h.Lease(s, 1);
  ASSERT_EQ(leased.size(), 1u);
  EXPECT_EQ(leased[0].generation(), visible);
}

}  // namespace
}  // namespace cistern::stream
