#include "src/registryd/group_commit.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace cistern::registryd {
namespace {

// A memory backend whose Apply can be held at its start, so a test knows
// which requests queue behind a write in progress.
class GatedBackend : public registry::MemoryBackend {
 public:
  absl::Status Apply(const registry::WriteBatch& batch) override {
    {
      MutexLock lock(&mu_);
      entered_++;
      cv_.SignalAll();
      while (held_) cv_.Wait(&mu_);
    }
    return MemoryBackend::Apply(batch);
  }
  void Hold() {
    MutexLock lock(&mu_);
    held_ = true;
    held_at_ = entered_;
  }
  void Release() {
    MutexLock lock(&mu_);
    held_ = false;
    cv_.SignalAll();
  }
  // Waits until Apply was entered `n` times more than when Hold was called.
  void WaitEntered(int n) {
    MutexLock lock(&mu_);
    while (entered_ < held_at_ + n) cv_.Wait(&mu_);
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  int held_at_ ABSL_GUARDED_BY(mu_) = 0;
};

class GroupCommitTest : public ::testing::Test {
 protected:
  GroupCommitTest() {
    catalog::CatalogOptions o;
    o.cluster_id = "t";
    catalog::Txn txn;
    catalog_ = std::move(*catalog::Catalog::Load(backend_, o, &clock_, &txn));
    EXPECT_TRUE(backend_.Apply(txn.batch).ok());
    catalog_->Commit(&txn);
    committer_ = std::make_unique<GroupCommitter>(catalog_.get(), &mu_, &backend_, 64,
                                                  [this](const GroupStats& s) {
                                                    groups_++;
                                                    if (s.failed) failed_groups_++;
                                                  });
  }

  static registry::v1::RegisterRequest Reg(int i) {
    registry::v1::RegisterRequest req;
    req.set_host_id("h" + std::to_string(i));
    req.set_advertise("h:1");
    req.set_incarnation(1);
    auto* t = req.add_tiers();
    t->set_name("ram");
    t->set_capacity_bytes(100);
    return req;
  }

  absl::Status RegisterHost(int i) {
    return committer_->Run(
        [i](catalog::Catalog& c, catalog::Txn* txn) { return c.Register(Reg(i), txn).status(); });
  }

  FakeClock clock_;
  GatedBackend backend_;
  SharedMutex mu_;
  std::unique_ptr<catalog::Catalog> catalog_;
  std::unique_ptr<GroupCommitter> committer_;
  std::atomic<int> groups_{0};
  std::atomic<int> failed_groups_{0};
};

TEST_F(GroupCommitTest, RequestsQueuedBehindAWriteShareTheNextOne) {
  uint64_t before = backend_.applied_batches();
  backend_.Hold();
  std::thread first([&] { EXPECT_TRUE(RegisterHost(0).ok()); });
  backend_.WaitEntered(1);  // the first group is being written
  std::vector<std::thread> rest;
  for (int i = 1; i <= 10; ++i) {
    rest.emplace_back([&, i] { EXPECT_TRUE(RegisterHost(i).ok()); });
  }
  // Each of the ten is queued or answered only after its group is durable.
  while (committer_->queued_for_test() < 10) std::this_thread::yield();
  backend_.Release();
  first.join();
  for (auto& t : rest) t.join();
  EXPECT_EQ(backend_.applied_batches() - before, 2u);
  EXPECT_EQ(groups_.load(), 2);
  ReaderLock lock(&mu_);
  EXPECT_EQ(catalog_->QuerySystem().hosts_size(), 11);
}

TEST_F(GroupCommitTest, AFailedWriteFailsEveryRequestInItsGroupAndChangesNothing) {
  backend_.FailWritesForTest(absl::UnavailableError("disk is read-only"));
  std::vector<std::thread> threads;
  std::atomic<int> unavailable{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      if (RegisterHost(i).code() == absl::StatusCode::kUnavailable) unavailable++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(unavailable.load(), 8);
  EXPECT_GE(failed_groups_.load(), 1);
  {
    ReaderLock lock(&mu_);
    EXPECT_EQ(catalog_->QuerySystem().hosts_size(), 0);
  }
  backend_.FailWritesForTest(absl::OkStatus());
  EXPECT_TRUE(RegisterHost(3).ok());
  ReaderLock lock(&mu_);
  ASSERT_EQ(catalog_->QuerySystem().hosts_size(), 1);
  // The failed attempts used no host numbers.
  EXPECT_EQ(catalog_->QuerySystem().hosts(0).host_number(), 1u);
}

TEST_F(GroupCommitTest, ARefusedRequestDoesNotFailTheOthersInItsGroup) {
  backend_.Hold();
  std::thread first([&] { EXPECT_TRUE(RegisterHost(0).ok()); });
  backend_.WaitEntered(1);
  absl::Status bad, good;
  std::thread t1([&] {
    bad = committer_->Run([](catalog::Catalog& c, catalog::Txn* txn) {
      auto req = Reg(1);
      req.set_host_id("bad id");
      return c.Register(req, txn).status();
    });
  });
  std::thread t2([&] { good = RegisterHost(2); });
  while (committer_->queued_for_test() < 2) std::this_thread::yield();
  backend_.Release();
  first.join();
  t1.join();
  t2.join();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(good.ok()) << good;
}

// Writers through the committer and readers under the shared lock at once,
// as the gRPC service runs them (TSan checks this test in `make tsan`).
TEST_F(GroupCommitTest, ConcurrentPublishersAndReadersSeeOnlyCommittedState) {
  constexpr int kHosts = 4, kRounds = 50;
  for (int h = 0; h < kHosts; ++h) ASSERT_TRUE(RegisterHost(h).ok());
  std::atomic<bool> done{false};
  std::atomic<uint64_t> reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      while (!done) {
        ReaderLock lock(&mu_);
        auto q = catalog_->QuerySystem();
        // Each publication adds one replica; a reader never sees more than
        // were acknowledged, nor a torn host list.
        EXPECT_EQ(q.hosts_size(), kHosts);
        EXPECT_LE(q.replicas(), static_cast<uint64_t>(kHosts * kRounds));
        registry::v1::LocateRequest loc;
        loc.set_key("k/0/0");
        (void)catalog_->Locate(loc);
        reads++;
      }
    });
  }
  std::vector<std::thread> writers;
  for (int h = 0; h < kHosts; ++h) {
    writers.emplace_back([&, h] {
      for (int i = 0; i < kRounds; ++i) {
        absl::Status s = committer_->Run([&](catalog::Catalog& c, catalog::Txn* txn) {
          registry::v1::PublishRequest req;
          req.set_host_id("h" + std::to_string(h));
          req.set_incarnation(1);
          req.set_seq(static_cast<uint64_t>(i) + 1);
          auto* r = req.add_added();
          r->set_key("k/" + std::to_string(h) + "/" + std::to_string(i));
          r->set_generation(static_cast<uint64_t>(i) * 16 + static_cast<uint64_t>(h) + 1);
          r->set_tier("ram");
          r->set_size(10);
          return c.Publish(req, txn).status();
        });
        EXPECT_TRUE(s.ok()) << s;
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  for (auto& t : readers) t.join();
  ReaderLock lock(&mu_);
  EXPECT_EQ(catalog_->replica_count(), static_cast<uint64_t>(kHosts * kRounds));
  EXPECT_GT(reads.load(), 0u);
}

TEST_F(GroupCommitTest, StopRefusesLaterRequests) {
  committer_->Stop();
  EXPECT_EQ(RegisterHost(1).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cistern::registryd
