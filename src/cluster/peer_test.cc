// PeerServer, the holder's side of a pull: what a peer may open and read,
// and when the leases it takes end. (The Fetcher is exercised end to end
// against real daemons in tests/cluster/peer_test.cc.)
#include "src/cluster/peer.h"

#include <chrono>
#include <string>
#include <thread>

#include "cistern/peer.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/units.h"
#include "src/store/checksum.h"
#include "src/store/manifest.h"
#include "src/store/store_test_util.h"

namespace cistern::cluster {
namespace {

using ::testing::HasSubstr;

class PeerServerTest : public ::testing::Test {
 protected:
  PeerServerTest() : h_(4 * kMiB), server_(&h_.store(), {h_.base()}, PeerServerOptions{}) {}

  absl::StatusOr<pv1::OpenReply> Open(const std::string& key, uint64_t generation = 0,
                                      uint64_t lease_ms = 0) {
    pv1::PeerRequest req;
    req.mutable_open()->set_key(key);
    req.mutable_open()->set_generation(generation);
    req.mutable_open()->set_requester_host("puller");
    req.mutable_open()->set_lease_ms(lease_ms);
    auto r = server_.HandleCall(req);
    if (!r.ok()) return r.status();
    EXPECT_TRUE(r->has_open());
    return r->open();
  }

  absl::Status Close(uint64_t region) {
    pv1::PeerRequest req;
    req.mutable_close()->set_region(region);
    return server_.HandleCall(req).status();
  }

  // Reads through a Resolve the way the transport does, releasing at once.
  absl::StatusOr<std::string> Read(uint64_t region, uint64_t offset, uint64_t length) {
    auto lease = server_.Resolve(region, offset, length);
    if (!lease.ok()) return lease.status();
    std::string out(static_cast<const char*>(lease->data), length);
    if (lease->release) lease->release();
    return out;
  }

  uint64_t PeerLeases() { return h_.store().SessionInfo(kPeerSession).leases; }

  store::StoreHarness h_;
  PeerServer server_;
};

TEST_F(PeerServerTest, AnOpenedObjectIsReadableWithinItsBoundsUntilClosed) {
  std::string value(100000, 'v');
  value[77] = 'x';
  uint64_t gen = *h_.Put(1, "weights", value);
  auto o = Open("weights");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->generation(), gen);
  EXPECT_EQ(o->size(), value.size());
  EXPECT_TRUE(o->has_checksum());
  EXPECT_EQ(o->checksum(), store::Checksum(value.data(), value.size()));
  EXPECT_EQ(o->tier(), h_.store().tier_names()[0]);
  EXPECT_EQ(PeerLeases(), 1u);
  EXPECT_EQ(*Read(o->region(), 0, value.size()), value);
  EXPECT_EQ(*Read(o->region(), 70, 10), value.substr(70, 10));
  EXPECT_EQ(server_.bytes_sent(), value.size() + 10);
  // Past the end, or wrapping around: refused, nothing read.
  EXPECT_EQ(Read(o->region(), value.size() - 1, 2).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Read(o->region(), ~uint64_t{0}, 2).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(Read(o->region() + 1, 0, 1).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(Close(o->region()).ok());
  EXPECT_EQ(PeerLeases(), 0u);
  EXPECT_EQ(server_.open_leases(), 0u);
  auto after = Read(o->region(), 0, 1);
  EXPECT_EQ(after.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(after.status().message(), HasSubstr("not open"));
  EXPECT_EQ(Close(o->region()).code(), absl::StatusCode::kNotFound);
}

TEST_F(PeerServerTest, TheOpenNamesWhereTheTransportListens) {
  ASSERT_TRUE(h_.Put(1, "k", "value").ok());
  server_.SetTransportAddress("198.18.1.11:40000");
  auto o = Open("k");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->transport_address(), "198.18.1.11:40000");
  EXPECT_TRUE(o->rkey().empty());  // no tier registered for one-sided reads
  server_.SetRemoteKeys({"packed-key"});
  o = Open("k");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->rkey(), "packed-key");
  EXPECT_NE(o->remote_address(), 0u);
}

TEST_F(PeerServerTest, ASmallObjectIsAnsweredInlineAndNothingIsLeased) {
  std::string value(5000, 's');
  value[4999] = 'e';
  ASSERT_TRUE(h_.Put(1, "small", value).ok());
  auto open = [&](uint64_t inline_max) {
    pv1::PeerRequest req;
    req.mutable_open()->set_key("small");
    req.mutable_open()->set_inline_max(inline_max);
    return server_.HandleCall(req);
  };
  auto r = open(value.size());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->open().has_payload());
  EXPECT_EQ(r->open().payload(), value);
  EXPECT_EQ(r->open().region(), 0u);
  EXPECT_EQ(PeerLeases(), 0u);
  EXPECT_EQ(server_.open_leases(), 0u);
  EXPECT_EQ(server_.bytes_sent(), value.size());
  // One byte over what the puller takes inline: a region, read as usual.
  r = open(value.size() - 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->open().has_payload());
  EXPECT_NE(r->open().region(), 0u);
  EXPECT_EQ(PeerLeases(), 1u);
  ASSERT_TRUE(Close(r->open().region()).ok());
  // The holder caps what it sends inline (PeerServerOptions::max_inline).
  PeerServerOptions capped;
  capped.max_inline = 100;
  PeerServer small_cap(&h_.store(), {h_.base()}, capped);
  pv1::PeerRequest req;
  req.mutable_open()->set_key("small");
  req.mutable_open()->set_inline_max(1 << 20);
  auto c = small_cap.HandleCall(req);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->open().has_payload());
}

TEST_F(PeerServerTest, TheOpenCarriesTheManifestOfATensorDict) {
  std::vector<TensorInfo> tensors(2);
  tensors[0].name = "w";
  tensors[0].dtype = DType::kFloat32;
  tensors[0].shape = {4, 4};
  tensors[0].offset = 0;
  tensors[0].nbytes = 64;
  tensors[1].name = "b";
  tensors[1].dtype = DType::kFloat32;
  tensors[1].shape = {4};
  tensors[1].offset = 64;
  tensors[1].nbytes = 16;
  store::ObjectStore::CreateArgs args;
  args.key = "model";
  args.size = 80;
  args.tensors = tensors;
  auto w = h_.store().Create(1, args);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(h_.store().Seal(1, w->write_id, std::nullopt).ok());
  auto o = Open("model");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->has_checksum());
  ASSERT_EQ(o->tensor_count(), 2u);
  auto decoded = store::DecodeManifest(o->manifest(), o->tensor_count());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), 2u);
  EXPECT_EQ((*decoded)[0].name, "w");
  EXPECT_EQ((*decoded)[1].shape, std::vector<uint64_t>{4});
  EXPECT_EQ((*decoded)[1].offset, 64u);
}

TEST_F(PeerServerTest, BadOpensAreRefusedAndLeaveNoLease) {
  uint64_t gen = *h_.Put(1, "k", "value");
  EXPECT_EQ(Open("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Open("k", gen + 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Open("").status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = server_.HandleCall(pv1::PeerRequest());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty"));
  // Written local_only: never served to another host.
  store::ObjectStore::CreateArgs args;
  args.key = "private";
  args.size = 3;
  args.local_only = true;
  auto w = h_.store().Create(1, args);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(h_.store().Seal(1, w->write_id, std::nullopt).ok());
  auto priv = Open("private");
  EXPECT_EQ(priv.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(priv.status().message(), HasSubstr("local_only"));
  EXPECT_EQ(PeerLeases(), 0u);
  EXPECT_EQ(server_.open_leases(), 0u);
}

TEST_F(PeerServerTest, ALeaseOutlivesCloseAndExpiryWhileAReadIsBeingSent) {
  std::string value(4096, 'a');
  ASSERT_TRUE(h_.Put(1, "k", value).ok());
  auto o = Open("k");
  ASSERT_TRUE(o.ok());
  auto sending = server_.Resolve(o->region(), 0, value.size());
  ASSERT_TRUE(sending.ok());
  ASSERT_TRUE(Close(o->region()).ok());
  // Removed and closed, but the read still in flight keeps the bytes.
  ASSERT_TRUE(h_.store().Remove("k", 0).ok());
  EXPECT_EQ(PeerLeases(), 1u);
  EXPECT_EQ(std::string(static_cast<const char*>(sending->data), value.size()), value);
  EXPECT_EQ(Read(o->region(), 0, 1).status().code(), absl::StatusCode::kNotFound);
  sending->release();
  EXPECT_EQ(PeerLeases(), 0u);
  EXPECT_EQ(server_.open_leases(), 0u);
}

TEST_F(PeerServerTest, APullerThatGoesQuietLosesItsLease) {
  ASSERT_TRUE(h_.Put(1, "k", "value").ok());
  auto quiet = Open("k", 0, /*lease_ms=*/1);
  auto busy = Open("k", 0, /*lease_ms=*/60000);
  ASSERT_TRUE(quiet.ok() && busy.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  server_.ExpireLeases();
  EXPECT_EQ(Read(quiet->region(), 0, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*Read(busy->region(), 0, 5), "value");
  EXPECT_EQ(PeerLeases(), 1u);
}

TEST(PeerServerShutdownTest, DestroyingTheServerEndsEveryLease) {
  store::StoreHarness h(kMiB);
  ASSERT_TRUE(h.Put(1, "k", "value").ok());
  {
    PeerServer server(&h.store(), {h.base()}, PeerServerOptions{});
    pv1::PeerRequest req;
    req.mutable_open()->set_key("k");
    ASSERT_TRUE(server.HandleCall(req).ok());
    ASSERT_TRUE(server.HandleCall(req).ok());
    EXPECT_EQ(h.store().SessionInfo(kPeerSession).leases, 2u);
  }
  EXPECT_EQ(h.store().SessionInfo(kPeerSession).leases, 0u);
}

}  // namespace
}  // namespace cistern::cluster
