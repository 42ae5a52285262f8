// Bad input on the wire: each gets a clear error, changes nothing, and the
// daemon keeps serving everyone else.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "cistern/local.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/common/frame.h"
#include "src/common/unique_fd.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/raw_connection.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;

using Raw = RawConnection;

int Code(const wire::Response& r) { return r.has_status() ? r.status().code() : 0; }
constexpr int kInvalid = static_cast<int>(absl::StatusCode::kInvalidArgument);

class ProtocolTest : public ::testing::Test {
 protected:
  explicit ProtocolTest(std::string yaml = "hello_timeout_ms: 300\nmax_frame_bytes: 64KiB\n")
      : daemon_(DaemonSpec{64 << 20, yaml}) {}
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
    auto c = daemon_.Connect();
    ASSERT_TRUE(c.ok());
    good_ = std::move(*c);
    ASSERT_TRUE(good_->Put("canary", "alive").ok());
    before_ = *good_->Stats();
  }
  // The daemon still serves, and nothing changed.
  void ExpectUnchangedAndServing() {
    auto v = good_->Get("canary");
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_TRUE(v->Release().ok());
    auto fresh = daemon_.Connect();
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    auto after = (*fresh)->Stats();
    EXPECT_EQ(after->objects(), before_.objects());
    EXPECT_EQ(after->tiers(0).used_bytes(), before_.tiers(0).used_bytes());
    EXPECT_EQ(after->pending_writes(), 0u);
  }

  Daemon daemon_;
  std::unique_ptr<Client> good_;
  DaemonStats before_;
};

TEST_F(ProtocolTest, MalformedFrameAfterHelloGetsAnErrorAndTheSessionGoesOn) {
  Raw raw(daemon_.socket_path());
  raw.Hello();
  auto h = raw.Receive();
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->has_hello());
  raw.SendFrame("\xff\xff\xff garbage");
  auto r = raw.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), kInvalid);
  EXPECT_THAT(r->status().message(), HasSubstr("malformed request"));
  wire::Request stats;
  stats.set_id(7);
  stats.mutable_stats();
  raw.Send(stats);
  auto s = raw.Receive();
  ASSERT_TRUE(s);
  EXPECT_EQ(Code(*s), 0);
  EXPECT_EQ(s->id(), 7u);
  ExpectUnchangedAndServing();
}

// Before hello a malformed frame is not a client of ours (issue 9, item 10):
// the error goes out and the connection closes.
TEST_F(ProtocolTest, MalformedFrameBeforeHelloGetsAnErrorAndTheConnectionCloses) {
  Raw raw(daemon_.socket_path());
  raw.SendFrame("\xff\xff\xff garbage");
  auto r = raw.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), kInvalid);
  EXPECT_THAT(r->status().message(), HasSubstr("before hello"));
  EXPECT_FALSE(raw.Receive());
  ExpectUnchangedAndServing();
}

TEST_F(ProtocolTest, OversizedFrameIsRefusedAndTheConnectionClosed) {
  Raw raw(daemon_.socket_path());
  raw.Hello();
  ASSERT_TRUE(raw.Receive());
  std::string header;
  AppendFrameHeader(&header, 1 << 20);  // above max_frame_bytes = 64 KiB
  raw.SendBytes(header + "partial");
  auto r = raw.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), kInvalid);
  EXPECT_THAT(r->status().message(), HasSubstr("exceeds the maximum"));
  EXPECT_TRUE(raw.ClosedByPeer());
  ExpectUnchangedAndServing();
}

TEST_F(ProtocolTest, TruncatedFrameThenHangupLeavesNothingBehind) {
  {
    Raw raw(daemon_.socket_path());
    raw.Hello();
    ASSERT_TRUE(raw.Receive());
    std::string header;
    AppendFrameHeader(&header, 1000);
    raw.SendBytes(header + "only a few bytes");
  }
  ExpectUnchangedAndServing();
}

TEST_F(ProtocolTest, WrongProtocolVersionIsRefused) {
  Raw raw(daemon_.socket_path());
  raw.Hello("", 99);
  auto r = raw.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r->status().message(), HasSubstr("protocol version 99"));
  EXPECT_TRUE(raw.ClosedByPeer());
  ExpectUnchangedAndServing();
}

TEST_F(ProtocolTest, RequestBeforeHelloIsRefused) {
  Raw raw(daemon_.socket_path());
  wire::Request req;
  req.set_id(5);
  req.mutable_get()->set_key("canary");
  raw.Send(req);
  auto r = raw.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(r->status().message(), HasSubstr("must be hello"));
  EXPECT_TRUE(raw.ClosedByPeer());
  ExpectUnchangedAndServing();
}

TEST_F(ProtocolTest, SilentClientIsDisconnectedAfterTheHelloTimeout) {
  Raw raw(daemon_.socket_path());
  auto r = raw.Receive();  // blocks until the daemon gives up on us
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(raw.ClosedByPeer());
  ExpectUnchangedAndServing();
}

TEST_F(ProtocolTest, EmptyRequestIsInvalid) {
  Raw raw(daemon_.socket_path());
  raw.Hello();
  ASSERT_TRUE(raw.Receive());
  wire::Request req;
  req.set_id(2);
  raw.Send(req);
  auto r = raw.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->id(), 2u);
  EXPECT_EQ(Code(*r), kInvalid);
  ExpectUnchangedAndServing();
}

TEST_F(ProtocolTest, BadVerbsGetClearErrorsAndChangeNothing) {
  auto other = daemon_.Connect();
  ASSERT_TRUE(other.ok());
  auto w = (*other)->Create("theirs", 100);
  ASSERT_TRUE(w.ok());
  Raw raw(daemon_.socket_path());
  raw.Hello();
  ASSERT_TRUE(raw.Receive());
  struct Case {
    wire::Request req;
    absl::StatusCode code;
    std::string text;
  };
  std::vector<Case> cases;
  auto add = [&](absl::StatusCode code, std::string text) {
    cases.push_back({wire::Request(), code, std::move(text)});
    cases.back().req.set_id(cases.size() + 10);
    return &cases.back().req;
  };
  using C = absl::StatusCode;
  add(C::kInvalidArgument, "key is empty")->mutable_create()->set_size(10);
  {
    auto* c = add(C::kInvalidArgument, "exceeds the limit")->mutable_create();
    c->set_key(std::string(2000, 'k'));
    c->set_size(10);
  }
  {
    auto* c = add(C::kInvalidArgument, "not valid UTF-8")->mutable_create();
    c->set_key("bad\xc3\x28");
    c->set_size(10);
  }
  {
    auto* c = add(C::kInvalidArgument, "is 0")->mutable_create();
    c->set_key("zero");
  }
  {
    auto* c = add(C::kInvalidArgument, "does not fit")->mutable_create();
    c->set_key("huge");
    c->set_size(1ull << 40);
  }
  {
    auto* c = add(C::kInvalidArgument, "overlap")->mutable_create();
    c->set_key("overlap");
    c->set_size(256);
    for (int i = 0; i < 2; ++i) {
      auto* t = c->add_tensors();
      t->set_name("t" + std::to_string(i));
      t->set_dtype(wire::DTYPE_FLOAT32);
      t->add_shape(32);
      t->set_offset(i * 64);
      t->set_nbytes(128);
    }
  }
  {
    auto* c = add(C::kInvalidArgument, "unknown dtype")->mutable_create();
    c->set_key("dtype");
    c->set_size(64);
    auto* t = c->add_tensors();
    t->set_name("t");
    t->set_dtype(static_cast<wire::DType>(77));
    t->set_nbytes(64);
  }
  {
    auto* c = add(C::kInvalidArgument, "unknown tier")->mutable_create();
    c->set_key("tier");
    c->set_size(64);
    c->set_tier("nvme");
  }
  {
    auto* p = add(C::kInvalidArgument, "5 bytes sent for a size of 6")->mutable_put();
    p->mutable_create()->set_key("short");
    p->mutable_create()->set_size(6);
    p->set_data("12345");
  }
  {
    auto* p = add(C::kDataLoss, "checksum sent does not match")->mutable_put();
    p->mutable_create()->set_key("sum");
    p->mutable_create()->set_size(5);
    p->set_data("12345");
    p->set_checksum(42);
    p->set_has_checksum(true);
  }
  {
    auto* p = add(C::kInvalidArgument, "key is empty")->mutable_put();
    p->mutable_create()->set_size(5);
    p->set_data("12345");
  }
  {
    auto* p = add(C::kAlreadyExists, "exists (generation")->mutable_put();
    p->mutable_create()->set_key("canary");
    p->mutable_create()->set_size(3);
    p->mutable_create()->set_if_absent(true);
    p->set_data("new");
  }
  add(C::kPermissionDenied, "another session")->mutable_seal()->set_write_id(w->write_id());
  add(C::kNotFound, "not pending")->mutable_seal()->set_write_id(999);
  add(C::kNotFound, "not held")->mutable_release()->set_lease_id(12345);
  add(C::kNotFound, "not found")->mutable_get()->set_key("absent");
  add(C::kNotFound, "not current")->mutable_get()->set_key("canary");
  cases.back().req.mutable_get()->set_generation(999999);
  add(C::kNotFound, "not found")->mutable_remove()->set_key("absent");
  add(C::kFailedPrecondition, "already said")->mutable_hello()->set_protocol_version(1);
  for (Case& c : cases) {
    raw.Send(c.req);
    auto r = raw.Receive();
    ASSERT_TRUE(r) << c.text;
    EXPECT_EQ(r->id(), c.req.id());
    EXPECT_EQ(Code(*r), static_cast<int>(c.code)) << c.text << ": " << r->status().message();
    EXPECT_THAT(r->status().message(), HasSubstr(c.text));
  }
  ASSERT_TRUE(w->Abort().ok());  // the other session's write was untouched
  ExpectUnchangedAndServing();
}

TEST_F(ProtocolTest, OversizedBatchIsRefused) {
  Raw raw(daemon_.socket_path());
  raw.Hello();
  ASSERT_TRUE(raw.Receive());
  wire::Request req;
  req.set_id(3);
  for (int i = 0; i < 5000; ++i) req.mutable_batch_release()->add_lease_ids(i + 1);
  raw.Send(req);
  auto r = raw.Receive();
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), kInvalid);
  EXPECT_THAT(r->status().message(), HasSubstr("max_batch"));
  ExpectUnchangedAndServing();
}

class TokenTest : public ProtocolTest {
 protected:
  TokenTest() : ProtocolTest("token: open-sesame\n") {}
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
    auto c = daemon_.Connect("open-sesame");
    ASSERT_TRUE(c.ok()) << c.status();
    good_ = std::move(*c);
    ASSERT_TRUE(good_->Put("canary", "alive").ok());
    before_ = *good_->Stats();
  }
};

TEST_F(TokenTest, MissingAndWrongTokensArePermissionDenied) {
  auto none = daemon_.Connect();
  EXPECT_EQ(none.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("token is required"));
  auto wrong = daemon_.Connect("guess");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("wrong token"));
  EXPECT_TRUE(good_->Get("canary").ok());
}

TEST(UidTest, UnlistedUidIsRefused) {
  Daemon d(DaemonSpec{64 << 20, "allowed_uids: [54321]\n"});
  std::string err;
  ASSERT_TRUE(d.Start({}, &err)) << err;
  auto c = d.Connect();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("is not in allowed_uids"));
}

}  // namespace
}  // namespace cistern::testing
