#include "src/stream/stream.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/store/store_test_util.h"
#include "src/stream/stream_manager.h"

namespace cistern::stream {
namespace {

using ::testing::HasSubstr;
constexpr uint64_t kMiB = 1 << 20;
constexpr store::SessionId kProducer = 1;

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

  Stream* Open(const std::string& name, wire::StreamOptions o = {}) {
    auto s = manager_->OpenStream(name, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : nullptr;
  }
  // Puts an object for `id` and returns a ref to it.
  wire::SampleRef Put(const std::string& id, size_t bytes = 100) {
    auto g = store_.Put(kProducer, "obj/" + id, std::string(bytes, 'x'));
    EXPECT_TRUE(g.ok()) << g.status();
    wire::SampleRef r;
    r.set_sample_id(id);
    r.set_key("obj/" + id);
    r.set_generation(g.ok() ? *g : 0);
    return r;
  }
  absl::Status Commit(Stream* s, std::vector<wire::SampleRef> refs,
                      wire::StreamCommitReply* reply = nullptr) {
    wire::StreamCommit c;
    for (auto& r : refs) *c.add_refs() = r;
    wire::StreamCommitReply local;
    bool blocked = false;
    return s->Commit(c, "p", reply ? reply : &local, &blocked);
  }
  std::vector<wire::SampleRef> Lease(Stream* s, uint32_t max, uint32_t index = 0,
                                     uint32_t count = 0) {
    wire::StreamLease l;
    l.set_max_refs(max);
    l.set_partition_index(index);
    l.set_partition_count(count);
    wire::StreamLeaseReply reply;
    bool blocked = false;
    EXPECT_TRUE(s->Lease(l, /*final=*/true, &reply, &blocked).ok());
    return {reply.refs().begin(), reply.refs().end()};
  }
  absl::Status Ack(Stream* s, const std::vector<wire::SampleRef>& refs,
                   std::optional<uint64_t> step, bool durable) {
    wire::StreamAck a;
    for (const auto& r : refs) {
      auto* h = a.add_refs();
      h->set_sample_id(r.sample_id());
      h->set_generation(r.generation());
      h->set_lease_id(r.lease_id());
    }
    if (step) a.set_global_step(*step);
    a.set_optimizer_durable(durable);
    wire::StreamAckReply reply;
    return s->Ack(a, &reply);
  }
  wire::StreamInfo Info(Stream* s) {
    wire::StreamInfo i;
    s->FillInfo(&i);
    return i;
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

TEST(StreamTest, CommittedRefsAreLeasedInCommitOrder) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b"), h.Put("c")}).ok());
  auto got = h.Lease(s, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].sample_id(), "a");
  EXPECT_EQ(got[1].sample_id(), "b");
  EXPECT_EQ(got[0].nbytes(), 100u);
  EXPECT_EQ(h.Info(s).depth(), 1u);
  EXPECT_EQ(h.Info(s).in_flight(), 2u);
}

TEST(StreamTest, DurableAckSurvivesRestartAndIsNeverDeliveredAgain) {
  StreamHarness h;
  Stream* s = h.Open("t");
  ASSERT_TRUE(h.Commit(s, {h.Put("a"), h.Put("b")}).ok());
  auto got = h.Lease(s, 1);
  ASSERT_TRUE(h.Ack(s, got, 1, true).ok());
  EXPECT_EQ(h.store().store().Stat("obj/a").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(h.Restart().ok());
  auto s2 = h.manager().Find("t");
  ASSERT_TRUE(s2.ok());
  auto again = h.Lease(*s2, 10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].sample_id(), "b");
}

}  // namespace
}  // namespace cistern::stream
