// The event loop and the ledger's background sync (group commit): a stream
// verb is answered only once its ledger write is on disk, other sessions are
// served while the fdatasync runs, writes that arrive during one fdatasync
// share the next, and a failed sync is reported, never answered as OK.
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/clock.h"
#include "src/common/mutex.h"
#include "src/daemon/server.h"
#include "src/registry/sqlite_backend.h"
#include "src/registry/sync_gate_testing.h"
#include "src/store/store_test_util.h"
#include "src/stream/stream_manager.h"
#include "tests/integration/raw_connection.h"

namespace cistern::daemon {
namespace {

using registry::SyncGate;
using ::testing::HasSubstr;
using testing::RawConnection;

// Whether a reply is waiting on `c` within `ms`.
bool Readable(const RawConnection& c, int ms) {
  pollfd p{c.fd(), POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

class DurableReplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(::mkdtemp(dir_), nullptr);
    auto backend = registry::OpenSqliteBackend(
        {.path = std::string(dir_) + "/registry.db",
         .background_sync = true,
         .fdatasync_for_test = [this](int fd) { return gate_.Sync(fd); }});
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
    std::vector<std::pair<std::string, stream::ReconcileReport>> reconciled;
    auto streams = stream::StreamManager::Open(backend_.get(), &h_.store(), Clock::Real(),
                                               stream::StreamDefaults{}, &reconciled);
    ASSERT_TRUE(streams.ok()) << streams.status();
    streams_ = *std::move(streams);
    ServerOptions o;
    o.socket_path = std::string(dir_) + "/s.sock";
    o.allowed_uids = {static_cast<uint32_t>(::getuid())};
    server_ = std::make_unique<Server>(o, &h_.store(), streams_.get(), Clock::Real());
    ASSERT_TRUE(server_->Listen().ok());
    loop_ = std::thread([this] { server_->Run(); });
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(h_.Put(0, "o" + std::to_string(i), "sample " + std::to_string(i)).ok());
    }
  }
  void TearDown() override {
    gate_.Open();
    if (server_) server_->Shutdown();
    if (loop_.joinable()) loop_.join();
    server_.reset();
    streams_.reset();
    backend_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<RawConnection> Connect() {
    auto c = std::make_unique<RawConnection>(std::string(dir_) + "/s.sock");
    c->Hello();
    auto r = c->Receive();
    EXPECT_TRUE(r && !r->has_status()) << (r ? r->DebugString() : "closed");
    return c;
  }
  static wire::Request Commit(int object) {
    wire::Request r;
    auto* c = r.mutable_stream_commit();
    c->set_name("s");
    auto* ref = c->add_refs();
    ref->set_sample_id("sample-" + std::to_string(object));
    ref->set_key("o" + std::to_string(object));
    c->set_adopt_visible(true);  // generation 0: the visible one
    return r;
  }
  static wire::Request Stat() {
    wire::Request r;
    r.mutable_stream_stat()->set_name("s");
    return r;
  }
  static wire::Request Status() {
    wire::Request r;
    r.mutable_daemon_status();
    return r;
  }

  char dir_[64] = "/tmp/cistern-durable-XXXXXX";
  SyncGate gate_;
  store::StoreHarness h_{8 << 20};
  std::unique_ptr<registry::MetadataBackend> backend_;
  std::unique_ptr<stream::StreamManager> streams_;
  std::unique_ptr<Server> server_;
  std::thread loop_;
};

TEST_F(DurableReplyTest, ACommitIsAnsweredOnlyOnceDurableAndOtherSessionsAreServedMeanwhile) {
  auto producer = Connect();
  wire::Request open;
  open.mutable_stream_open()->set_name("s");
  ASSERT_FALSE(producer->Call(open).has_status());
  ASSERT_TRUE(backend_->WaitDurable().ok());

  const int before = gate_.entered();
  gate_.Shut();
  wire::Request commit = Commit(0);
  commit.set_id(100);
  producer->Send(commit);
  gate_.AwaitEntered(before + 1);  // its fdatasync is under way, and held
  // Another session is served at once: the loop does not wait for the sync.
  auto other = Connect();
  wire::Response status = other->Call(Status());
  EXPECT_FALSE(status.has_status());
  EXPECT_TRUE(status.has_daemon_status());
  // A stream reply may reveal the commit, so it waits too, on any session.
  wire::Request stat = Stat();
  stat.set_id(200);
  other->Send(stat);
  EXPECT_FALSE(Readable(*producer, 300)) << "a commit was answered before it was durable";
  EXPECT_FALSE(Readable(*other, 0));
  EXPECT_EQ(backend_->sync_progress().durable, backend_->sync_progress().written - 1);

  gate_.Open();
  auto reply = producer->Receive();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->id(), 100u);
  EXPECT_FALSE(reply->has_status()) << reply->status().message();
  EXPECT_EQ(reply->stream_commit().committed(), 1u);
  auto stat_reply = other->Receive();
  ASSERT_TRUE(stat_reply.has_value());
  EXPECT_EQ(stat_reply->id(), 200u);
  EXPECT_EQ(stat_reply->stream_info().depth(), 1u);
  registry::SyncProgress p = backend_->sync_progress();
  EXPECT_EQ(p.durable, p.written);
}

TEST_F(DurableReplyTest, CommitsThatArriveDuringOneFdatasyncShareTheNext) {
  auto first = Connect();
  wire::Request open;
  open.mutable_stream_open()->set_name("s");
  ASSERT_FALSE(first->Call(open).has_status());
  std::vector<std::unique_ptr<RawConnection>> producers;
  for (int i = 0; i < 5; ++i) producers.push_back(Connect());
  ASSERT_TRUE(backend_->WaitDurable().ok());
  const uint64_t syncs_before = backend_->sync_progress().syncs;
  const uint64_t written_before = backend_->sync_progress().written;

  const int before = gate_.entered();
  gate_.Shut();
  first->Send(Commit(0));
  gate_.AwaitEntered(before + 1);
  for (int i = 0; i < 5; ++i) producers[i]->Send(Commit(i + 1));
  // All five are written (the loop does not wait), none answered.
  for (int i = 0; i < 5000 && backend_->sync_progress().written < written_before + 6; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(backend_->sync_progress().written, written_before + 6);
  for (auto& p : producers) EXPECT_FALSE(Readable(*p, 0));

  gate_.Open();
  auto r = first->Receive();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->stream_commit().committed(), 1u);
  for (auto& p : producers) {
    auto reply = p->Receive();
    ASSERT_TRUE(reply.has_value());
    EXPECT_FALSE(reply->has_status()) << reply->status().message();
    EXPECT_EQ(reply->stream_commit().committed(), 1u);
  }
  // One fdatasync for the first commit, one for the five behind it.
  EXPECT_EQ(backend_->sync_progress().syncs, syncs_before + 2);
}

TEST_F(DurableReplyTest, AFailedSyncIsAnErrorForTheWaitingCommitAndRefusesLaterOnes) {
  auto producer = Connect();
  wire::Request open;
  open.mutable_stream_open()->set_name("s");
  ASSERT_FALSE(producer->Call(open).has_status());
  ASSERT_TRUE(backend_->WaitDurable().ok());

  gate_.FailFromNowOn();
  wire::Response r = producer->Call(Commit(0));
  ASSERT_TRUE(r.has_status());
  EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_THAT(r.status().message(), HasSubstr("could not be made durable"));
  EXPECT_THAT(r.status().message(), HasSubstr("fdatasync"));

  r = producer->Call(Commit(1));
  ASSERT_TRUE(r.has_status());
  EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_THAT(r.status().message(), HasSubstr("refuses writes since a sync failed"));
  // Object requests are still served.
  auto other = Connect();
  EXPECT_FALSE(other->Call(Status()).has_status());
}

}  // namespace
}  // namespace cistern::daemon
