// Streams against a real cisternd through the C++ client: bad input changes
// nothing, commits and leases wait and give up as promised, a killed consumer's
// leases come back after the lease timeout, a registry that cannot be written
// fails commit and ack cleanly, and a kill -9 of the daemon keeps the stream.
#include "include/cistern/stream.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "cistern/local.pb.h"
#include "fmt/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "include/cistern/client.h"
#include "tests/integration/daemon_harness.h"
#include "tests/integration/raw_connection.h"

namespace cistern::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Every figure of a StreamInfo that a rejected request must leave alone.
std::string Figures(const StreamInfo& i) { return i.ShortDebugString(); }

std::vector<std::string> Ids(const std::vector<SampleRef>& refs) {
  std::vector<std::string> ids;
  for (const auto& r : refs) ids.push_back(r.sample_id);
  return ids;
}

// A raw session past its hello, for requests the C++ client cannot make (a
// stream it never opened, a commit carrying a lease id).
class Raw : public RawConnection {
 public:
  explicit Raw(const std::string& path) : RawConnection(path) {
    wire::Request hello;
    hello.mutable_hello()->set_protocol_version(1);
    auto r = Call(hello);
    EXPECT_TRUE(r.has_hello()) << r.DebugString();
  }
};

absl::StatusCode CodeOf(const wire::Response& r) {
  return static_cast<absl::StatusCode>(r.has_status() ? r.status().code() : 0);
}

// A cistern_stream_client process with its stdout on a pipe.
ChildProcess StreamClient(std::vector<std::string> args) {
  args.insert(args.begin(), BinaryPath("tests/integration/cistern_stream_client"));
  return ChildProcess::Spawn(std::move(args));
}

class StreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    ASSERT_TRUE(daemon_.Start({}, &err)) << err;
    Reconnect();
  }
  void Reconnect() {
    auto c = daemon_.Connect();
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }
  std::unique_ptr<Client> Connect() {
    auto c = daemon_.Connect();
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  Stream Open(const std::string& name, const StreamOptions& o = {}) {
    auto s = Stream::Open(client_.get(), name, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  // A sealed object "obj-<id>" of `n` bytes that depend on the id only, and a
  // ref to it.
  SampleRef Sample(const std::string& id, size_t n = 4096) {
    std::vector<std::byte> bytes(n);
    FillForKey(id, bytes.data(), n);
    auto ref = client_->Put("obj-" + id, bytes);
    EXPECT_TRUE(ref.ok()) << ref.status();
    SampleRef r;
    r.sample_id = id;
    r.key = "obj-" + id;
    r.generation = ref.ok() ? ref->generation : 0;
    r.features = {{"hidden", DType::kFloat32, {n / 4}}};
    r.metadata = {{"policy_version", "7"}};
    return r;
  }
  std::vector<SampleRef> Samples(const std::string& prefix, int count, size_t n = 4096) {
    std::vector<SampleRef> refs;
    for (int i = 0; i < count; ++i) refs.push_back(Sample(prefix + std::to_string(i), n));
    return refs;
  }
  // True if the object behind `ref` is there with the bytes it was put with.
  bool Intact(const SampleRef& ref) {
    auto v = client_->Get(ref.key, ref.generation);
    return v.ok() && MatchesKey(ref.sample_id, v->data(), v->size());
  }

  Daemon daemon_;
  std::unique_ptr<Client> client_;
};

// ---------------------------------------------------------------------------
// Bad input: a clear error, and nothing changes.

TEST_F(StreamTest, BadStreamNameIsInvalidArgumentNamingItAndCreatesNothing) {
  for (std::string bad : {std::string(""), std::string("has space"), std::string("a/b"),
                          std::string(129, 'n'), std::string("caf\xc3\xa9")}) {
    SCOPED_TRACE(bad);
    auto s = Stream::Open(client_.get(), bad);
    ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("stream name"));
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("[A-Za-z0-9._-]"));
  }
  // The same check guards every verb.
  Raw raw(daemon_.socket_path());
  wire::Request req;
  req.mutable_stream_stat()->set_name("no good");
  auto r = raw.Call(req);
  EXPECT_EQ(CodeOf(r), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("'no good'"));
  EXPECT_THAT(*Stream::List(client_.get()), IsEmpty());
}

TEST_F(StreamTest, CommitBeforeOpenIsNotFoundAndCreatesNothing) {
  SampleRef ref = Sample("x");
  Raw raw(daemon_.socket_path());
  wire::Request req;
  auto* c = req.mutable_stream_commit();
  c->set_name("never-opened");
  auto* w = c->add_refs();
  w->set_sample_id("x");
  w->set_key(ref.key);
  w->set_generation(ref.generation);
  auto r = raw.Call(req);
  EXPECT_EQ(CodeOf(r), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("no stream named 'never-opened'"));
  wire::Request lease;
  lease.mutable_stream_lease()->set_name("never-opened");
  lease.mutable_stream_lease()->set_max_refs(1);
  EXPECT_EQ(CodeOf(raw.Call(lease)), absl::StatusCode::kNotFound);
  EXPECT_THAT(*Stream::List(client_.get()), IsEmpty());
  // The object is not pinned: removing it frees it.
  EXPECT_TRUE(client_->Remove(ref.key).ok());
  EXPECT_EQ(client_->Stats()->objects(), 0u);
}

TEST_F(StreamTest, BadRefsRejectTheWholeCommitAndChangeNothing) {
  Stream s = Open("s");
  SampleRef good = Sample("good");
  SampleRef other = Sample("other", 1000);
  auto before = s.Stat();
  ASSERT_TRUE(before.ok());
  uint64_t used = client_->Stats()->tiers(0).used_bytes();

  struct Case {
    std::string what;
    SampleRef ref;
    absl::StatusCode code;
    std::string says;
  };
  std::vector<Case> cases;
  auto with = [&](std::string what, absl::StatusCode code, std::string says, auto change) {
    SampleRef r = other;
    r.sample_id = "bad-" + what;
    change(r);
    cases.push_back({what, r, code, says});
  };
  with("generation-0", absl::StatusCode::kInvalidArgument, "generation 0",
       [](SampleRef& r) { r.generation = 0; });
  with("missing-object", absl::StatusCode::kNotFound, "'bad-missing-object'",
       [](SampleRef& r) { r.key = "no-such-object"; });
  with("stale-generation", absl::StatusCode::kNotFound, "'bad-stale-generation'",
       [](SampleRef& r) { r.generation += 1000; });
  with("wrong-nbytes", absl::StatusCode::kInvalidArgument, "says nbytes 1001 but",
       [](SampleRef& r) { r.nbytes = 1001; });
  with("big-metadata", absl::StatusCode::kInvalidArgument,
       "metadata of 4101 bytes exceeds the limit of 4096", [](SampleRef& r) {
         r.metadata = {{"logits", std::string(4095, 'x')}};
       });
  with("many-metadata", absl::StatusCode::kInvalidArgument,
       "33 metadata entries exceed the limit of 32", [](SampleRef& r) {
         r.metadata.clear();
         for (int i = 0; i < 33; ++i) r.metadata["k" + std::to_string(i)] = "v";
       });
  with("dtype-99", absl::StatusCode::kInvalidArgument, "no valid dtype (99)",
       [](SampleRef& r) { r.features[0].dtype = static_cast<DType>(99); });
  with("dtype-0", absl::StatusCode::kInvalidArgument, "no valid dtype (0)",
       [](SampleRef& r) { r.features[0].dtype = static_cast<DType>(0); });
  with("empty-id", absl::StatusCode::kInvalidArgument, "sample_id is empty",
       [](SampleRef& r) { r.sample_id = ""; });

  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    // The good ref first: it must not be committed (nor stay pinned) either.
    auto r = s.Commit({good, c.ref});
    ASSERT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.says));
    auto after = s.Stat();
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(Figures(*after), Figures(*before));
  }

  // A producer may not set what lease sets (the C++ client never sends it).
  Raw raw(daemon_.socket_path());
  for (int field : {0, 1}) {
    SCOPED_TRACE(field == 0 ? "lease_id" : "deliveries");
    wire::Request req;
    auto* c = req.mutable_stream_commit();
    c->set_name("s");
    for (const SampleRef* ref : {&good, &other}) {
      auto* w = c->add_refs();
      w->set_sample_id(ref->sample_id);
      w->set_key(ref->key);
      w->set_generation(ref->generation);
    }
    if (field == 0) c->mutable_refs(1)->set_lease_id(5);
    if (field == 1) c->mutable_refs(1)->set_deliveries(1);
    auto r = raw.Call(req);
    EXPECT_EQ(CodeOf(r), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(),
                HasSubstr("'other': lease_id and deliveries are set by lease"));
    EXPECT_EQ(Figures(*s.Stat()), Figures(*before));
  }

  // Nothing was left pinned: both objects go when removed.
  EXPECT_EQ(client_->Stats()->tiers(0).used_bytes(), used);
  ASSERT_TRUE(client_->Remove(good.key).ok());
  ASSERT_TRUE(client_->Remove(other.key).ok());
  auto stats = client_->Stats();
  EXPECT_EQ(stats->objects(), 0u);
  EXPECT_EQ(stats->leases(), 0u);
  EXPECT_EQ(stats->tiers(0).used_bytes(), 0u);
}

TEST_F(StreamTest, AckWithAWrongLeaseIdIsFailedPreconditionAndChangesNothing) {
  Stream s = Open("s");
  ASSERT_TRUE(s.Commit(Samples("a", 2)).ok());
  auto leased = s.Lease({.max_refs = 2});
  ASSERT_TRUE(leased.ok() && leased->size() == 2u);
  auto before = s.Stat();
  std::vector<SampleRef> refs = *leased;
  refs[1].lease_id += 1000;
  auto r = s.Ack(refs, 1, true);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr(fmt::format("lease {} on sample 'a1'", refs[1].lease_id)));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not current"));
  EXPECT_EQ(Figures(*s.Stat()), Figures(*before));
  // The right handles still ack.
  auto ok = s.Ack(*leased, 1, true);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->acked(), 2u);
  EXPECT_EQ(ok->released(), 2u);
}

TEST_F(StreamTest, AckOfAnUnknownSampleIsNotFoundAndChangesNothing) {
  Stream s = Open("s");
  ASSERT_TRUE(s.Commit(Samples("a", 1)).ok());
  auto leased = s.Lease({.max_refs = 1});
  ASSERT_TRUE(leased.ok() && leased->size() == 1u);
  auto before = s.Stat();
  SampleRef ghost;
  ghost.sample_id = "ghost";
  ghost.lease_id = (*leased)[0].lease_id;
  auto r = s.Ack({(*leased)[0], ghost}, 3, true);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("stream 's' has no sample 'ghost'"));
  EXPECT_EQ(Figures(*s.Stat()), Figures(*before));
  EXPECT_EQ(s.Stat()->in_flight(), 1u);
}

TEST_F(StreamTest, LeaseOfAPartitionAtOrAboveItsCountIsInvalidAndChangesNothing) {
  Stream s = Open("s");
  ASSERT_TRUE(s.Commit(Samples("a", 3)).ok());
  auto before = s.Stat();
  for (auto [index, count] : {std::pair{3u, 3u}, std::pair{7u, 2u}}) {
    auto r = s.Lease({.max_refs = 3, .partition = std::pair{index, count}});
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr(fmt::format("partition index {} is not below count {}", index, count)));
  }
  EXPECT_EQ(Figures(*s.Stat()), Figures(*before));
}

TEST_F(StreamTest, LowWatermarkAboveHighIsInvalidAndChangesNothing) {
  Stream s = Open("s", {.high_watermark_bytes = 1 << 20});
  auto before = s.Stat();
  StreamOptions bad{.high_watermark_bytes = 1000, .low_watermark_bytes = 2000};
  auto r = Stream::Open(client_.get(), "s", bad);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("low_watermark_bytes 2000 is above high_watermark_bytes 1000"));
  EXPECT_EQ(Figures(*s.Stat()), Figures(*before));
  // Nor is a new stream created with them.
  auto fresh = Stream::Open(client_.get(), "fresh", bad);
  EXPECT_EQ(fresh.status().code(), absl::StatusCode::kInvalidArgument);
  auto all = Stream::List(client_.get());
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].name(), "s");
}

// ---------------------------------------------------------------------------
// Waiting.

class StreamWaitTest : public StreamTest {
 protected:
  // Four 64 KiB samples reach high (256 KiB); the stream resumes below 128 KiB.
  static constexpr uint64_t kSample = 64 << 10;
  static constexpr uint64_t kHigh = 4 * kSample;
  static constexpr uint64_t kLow = 2 * kSample;

  void SetUp() override {
    StreamTest::SetUp();
    stream_ = Open("w", {.high_watermark_bytes = kHigh, .low_watermark_bytes = kLow});
    ASSERT_TRUE(stream_->Commit(Samples("full", 4, kSample)).ok());
    auto info = stream_->Stat();
    ASSERT_TRUE(info->paused()) << Figures(*info);
  }
  std::optional<Stream> stream_;
};

TEST_F(StreamWaitTest, CommitBlockedByTheHighWatermarkCompletesOnceAConsumerAcksDurably) {
  SampleRef next = Sample("next", kSample);
  auto producer = Connect();
  auto ps = Stream::Open(producer.get(), "w");
  ASSERT_TRUE(ps.ok());
  std::atomic<bool> done = false;
  absl::StatusOr<CommitResult> result;
  std::thread t([&] {
    result = ps->Commit({next}, std::chrono::seconds(60));
    done = true;
  });
  // Parked: the daemon counted the wait and has not answered.
  ASSERT_TRUE(Eventually([&] { return stream_->Stat()->producer_waits() == 1; }));
  EXPECT_FALSE(done);
  auto refs = stream_->Lease({.max_refs = 4});
  ASSERT_TRUE(refs.ok() && refs->size() == 4u);
  EXPECT_FALSE(done);
  // Acked without a durable marker the bytes stay, and so does the pause.
  ASSERT_TRUE(stream_->Ack({(*refs)[0], (*refs)[1]}, 1, false).ok());
  EXPECT_EQ(stream_->Stat()->resident_bytes(), kHigh);
  EXPECT_FALSE(done);
  auto durable = stream_->Ack({(*refs)[2], (*refs)[3]}, 2, true);
  ASSERT_TRUE(durable.ok());
  EXPECT_EQ(durable->released(), 4u);
  t.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->committed, 1u);
  auto info = stream_->Stat();
  EXPECT_EQ(info->depth(), 1u);
  EXPECT_EQ(info->resident_bytes(), kSample);
  EXPECT_EQ(info->producer_waits(), 1u);
  EXPECT_EQ(info->producer_rejections(), 0u);
  EXPECT_FALSE(info->paused());
}

TEST_F(StreamWaitTest, CommitBlockedPastItsWaitIsResourceExhaustedNamingTheFigures) {
  SampleRef next = Sample("next", kSample);
  auto before = stream_->Stat();
  auto r = stream_->Commit({next}, milliseconds(150));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  std::string msg(r.status().message());
  EXPECT_THAT(msg, HasSubstr("stream 'w' is paused"));
  EXPECT_THAT(msg, HasSubstr(fmt::format("holds {} bytes", kHigh)));
  EXPECT_THAT(msg, HasSubstr(fmt::format("high_watermark_bytes {}", kHigh)));
  EXPECT_THAT(msg, HasSubstr(fmt::format("low_watermark_bytes {}", kLow)));
  EXPECT_THAT(msg, HasSubstr("waited"));
  // Without a wait it is refused at once, and counted too.
  auto now = stream_->Commit({next});
  EXPECT_EQ(now.status().code(), absl::StatusCode::kResourceExhausted);
  auto info = stream_->Stat();
  EXPECT_EQ(info->producer_waits(), before->producer_waits() + 2);
  EXPECT_EQ(info->producer_rejections(), before->producer_rejections() + 2);
  EXPECT_EQ(info->depth(), before->depth());
  EXPECT_EQ(info->committed(), before->committed());
  EXPECT_EQ(info->resident_bytes(), before->resident_bytes());
  // The refused sample's object is not pinned.
  uint64_t objects = client_->Stats()->objects();
  ASSERT_TRUE(client_->Remove(next.key).ok());
  EXPECT_EQ(client_->Stats()->objects(), objects - 1);
}

TEST_F(StreamTest, LeaseWithWaitReturnsAsSoonAsACommitArrives) {
  Stream s = Open("s");
  auto consumer = Connect();
  auto cs = Stream::Open(consumer.get(), "s");
  ASSERT_TRUE(cs.ok());
  constexpr auto kWait = std::chrono::seconds(60);
  absl::StatusOr<std::vector<SampleRef>> got;
  Clock::duration took{};
  std::thread t([&] {
    auto start = Clock::now();
    got = cs->Lease({.max_refs = 4, .min_refs = 1, .wait = kWait});
    took = Clock::now() - start;
  });
  ASSERT_TRUE(Eventually([&] { return s.Stat()->consumer_starved() == 1; }));
  ASSERT_TRUE(s.Commit({Sample("arrived")}).ok());
  t.join();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].sample_id, "arrived");
  EXPECT_EQ((*got)[0].deliveries, 1u);
  EXPECT_LT(took, kWait) << "the lease ran to its deadline instead of returning on the commit";
  EXPECT_EQ(s.Stat()->consumer_empty(), 0u);
}

TEST_F(StreamTest, LeaseWithWaitAndNothingArrivingReturnsEmptyAfterItsWait) {
  Stream s = Open("s");
  auto start = Clock::now();
  auto got = s.Lease({.max_refs = 4, .wait = milliseconds(200)});
  auto took = Clock::now() - start;
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, IsEmpty());
  EXPECT_GE(took, milliseconds(200));
  auto info = s.Stat();
  EXPECT_EQ(info->consumer_starved(), 1u);
  EXPECT_EQ(info->consumer_empty(), 1u);
}

// ---------------------------------------------------------------------------
// A consumer killed while it holds leases.

TEST_F(StreamTest, KilledConsumersLeasesComeBackAfterTheLeaseTimeoutNotBefore) {
  constexpr uint64_t kTimeoutMs = 500;
  Stream s = Open("s", {.lease_timeout_ms = kTimeoutMs});
  auto refs = Samples("k", 5);
  ASSERT_TRUE(s.Commit(refs).ok());
  // Every lease the child takes starts after this.
  auto spawned = Clock::now();
  ChildProcess child = StreamClient({"lease", daemon_.socket_path(), "s", "5"});
  std::string line = child.ReadLine();
  ASSERT_EQ(line, "leased k0 k1 k2 k3 k4");
  ::kill(child.pid(), SIGKILL);
  EXPECT_EQ(child.Wait(), 128 + SIGKILL);
  // The session is gone, but its stream leases are not session state: they
  // last until the timeout.
  ASSERT_TRUE(Eventually([&] { return client_->Stats()->sessions() == 1; }));
  // Not before the timeout, however slow this machine: the leases were taken
  // after `spawned`, so they may not be back before spawned + timeout. The
  // first moment they are seen back must be later than that (a slow machine
  // only makes it later).
  Clock::time_point back;
  ASSERT_TRUE(Eventually([&] {
    auto i = s.Stat();
    back = Clock::now();
    EXPECT_TRUE(i->depth() == 0 || i->depth() == 5) << "leases came back one by one";
    return i->depth() == 5 && i->in_flight() == 0;
  }));
  EXPECT_GE(back - spawned, milliseconds(kTimeoutMs)) << "leases came back before lease_timeout_ms";
  EXPECT_EQ(s.Stat()->expired_leases(), 5u);
  auto again = s.Lease({.max_refs = 10});
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(Ids(*again), Ids(refs)) << "expired leases come back in commit order";
  for (const auto& r : *again) {
    EXPECT_EQ(r.deliveries, 2u) << r.sample_id;
    EXPECT_TRUE(Intact(r)) << r.sample_id;
  }
  ASSERT_TRUE(s.Ack(*again, 1, true).ok());
  EXPECT_EQ(client_->Stats()->objects(), 0u);
}

// ---------------------------------------------------------------------------
// The registry cannot be written.

uint64_t FileSize(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// Sets the soft RLIMIT_FSIZE of a process (cisternd ignores SIGXFSZ, so a
// write past it fails with EFBIG) and puts the old one back when destroyed.
// Only the soft limit: lowering the hard one cannot be undone without
// CAP_SYS_RESOURCE.
class FileSizeLimit {
 public:
  FileSizeLimit(pid_t pid, uint64_t bytes) : pid_(pid) {
    EXPECT_EQ(::prlimit(pid_, RLIMIT_FSIZE, nullptr, &old_), 0) << std::strerror(errno);
    rlimit lim{std::min<rlim_t>(bytes, old_.rlim_max), old_.rlim_max};
    EXPECT_EQ(::prlimit(pid_, RLIMIT_FSIZE, &lim, nullptr), 0) << std::strerror(errno);
  }
  ~FileSizeLimit() { Lift(); }
  void Lift() {
    if (pid_ > 0) {
      EXPECT_EQ(::prlimit(pid_, RLIMIT_FSIZE, &old_, nullptr), 0) << std::strerror(errno);
    }
    pid_ = -1;
  }

 private:
  pid_t pid_;
  rlimit old_{};
};

TEST_F(StreamTest, RegistryThatCannotBeWrittenFailsCommitAndAckAndChangesNothing) {
  Stream s = Open("s");
  auto refs = Samples("c", 10);
  ASSERT_TRUE(s.Commit(refs).ok());
  auto leased = s.Lease({.max_refs = 6});
  ASSERT_TRUE(leased.ok() && leased->size() == 6u);
  const auto& l = *leased;
  auto big = Samples("big", 300, 64);
  auto before = s.Stat();
  ASSERT_TRUE(before.ok());
  uint64_t store_leases = client_->Stats()->leases();

  // In WAL mode a write appends to the -wal file (the database file is only
  // written by a checkpoint, after 1000 pages of WAL): a limit at the WAL's
  // size makes every registry write fail.
  const std::string db = daemon_.registry_path();
  const uint64_t wal = FileSize(db + "-wal");
  ASSERT_GT(wal, 0u) << "no WAL file beside " << db;
  FileSizeLimit limit(daemon_.pid(), wal);
  auto registry_error = [&](const absl::Status& st) {
    EXPECT_TRUE(st.code() == absl::StatusCode::kUnavailable ||
                st.code() == absl::StatusCode::kResourceExhausted)
        << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr("registry database '" + db + "'"));
  };

  auto commit = s.Commit(big);
  registry_error(commit.status());
  EXPECT_THAT(std::string(commit.status().message()), HasSubstr("commit of 300 refs not written"));
  auto ack_a = s.Ack({l[0], l[1]}, 1, true);
  registry_error(ack_a.status());
  EXPECT_THAT(std::string(ack_a.status().message()), HasSubstr("ack of 2 refs not written"));
  auto ack_b = s.Ack({l[2], l[3]}, 2, true);
  registry_error(ack_b.status());
  auto drop = s.Fail({l[4]}, /*retryable=*/false);
  registry_error(drop.status());
  EXPECT_EQ(Figures(*s.Stat()), Figures(*before));
  EXPECT_EQ(client_->Stats()->leases(), store_leases) << "the refused commit left pins behind";

  // Writable again: the same ack goes through.
  limit.Lift();
  auto again = s.Ack({l[0], l[1]}, 1, true);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->acked(), 2u);
  EXPECT_EQ(again->released(), 2u);

  // The ledger holds what the client was told: the 10 commits, the one ack
  // that succeeded; not the refused commit, ack or drop.
  std::string err;
  ASSERT_TRUE(daemon_.Restart(&err)) << err;
  Reconnect();
  Stream t = Open("s");
  auto info = t.Stat();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->committed(), 10u);
  EXPECT_EQ(info->acked(), 2u);
  EXPECT_EQ(info->dropped(), 0u);
  EXPECT_EQ(info->lost(), 0u);
  EXPECT_EQ(info->depth(), 8u);
  EXPECT_EQ(info->durable_step(), 1u);
  auto rest = t.Lease({.max_refs = 1000});
  ASSERT_TRUE(rest.ok());
  std::set<std::string> want;
  for (size_t i = 2; i < 10; ++i) want.insert(refs[i].sample_id);
  auto ids = Ids(*rest);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), want);
  for (const auto& r : *rest) EXPECT_TRUE(Intact(r)) << r.sample_id;
  for (const auto& r : {l[0], l[1]}) {
    EXPECT_EQ(client_->Get(r.key, r.generation).status().code(), absl::StatusCode::kNotFound);
  }
  // The refused commit's objects were never the stream's.
  for (const auto& r : big) ASSERT_TRUE(client_->Remove(r.key, r.generation).ok()) << r.key;
  ASSERT_TRUE(t.Ack(*rest, 3, true).ok());
  EXPECT_EQ(client_->Stats()->objects(), 0u);
}

// ---------------------------------------------------------------------------
// A daemon restart (kill -9) keeps the stream.

TEST_F(StreamTest, DaemonKilledAndRestartedKeepsTheStream) {
  Stream s = Open("s");
  auto refs = Samples("r", 10, 20000);
  ASSERT_TRUE(s.Commit(refs).ok());
  auto leased = s.Lease({.max_refs = 6});
  ASSERT_TRUE(leased.ok() && leased->size() == 6u);
  const auto& l = *leased;
  ASSERT_TRUE(s.Ack({l[0], l[1]}, 1, true).ok());   // durable: released
  ASSERT_TRUE(s.Ack({l[2], l[3]}, 2, false).ok());  // acked, marker not durable
  // l[4], l[5] leased, never acked; r6..r9 pending.
  auto info = s.Stat();
  EXPECT_EQ(info->acked(), 2u);
  EXPECT_EQ(info->awaiting_durable(), 2u);
  EXPECT_EQ(info->in_flight(), 2u);
  EXPECT_EQ(info->depth(), 4u);

  std::string err;
  ASSERT_TRUE(daemon_.Restart(&err)) << err;
  Reconnect();
  EXPECT_THAT(daemon_.Log(), HasSubstr("8 requeued, 0 lost"));
  Stream t = Open("s");
  info = t.Stat();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->depth(), 8u);
  EXPECT_EQ(info->in_flight(), 0u);
  EXPECT_EQ(info->awaiting_durable(), 0u);
  EXPECT_EQ(info->committed(), 10u);
  EXPECT_EQ(info->acked(), 2u);
  EXPECT_EQ(info->lost(), 0u);
  EXPECT_EQ(info->resident_bytes(), 8u * 20000);
  EXPECT_EQ(info->global_step(), 2u);
  EXPECT_EQ(info->durable_step(), 1u);
  // A lease handle from before the restart names nothing now.
  auto stale = t.Ack({l[4]});
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition) << stale.status();
  // Durably acked: gone for good.
  for (const auto& r : {l[0], l[1]}) {
    EXPECT_EQ(client_->Get(r.key, r.generation).status().code(), absl::StatusCode::kNotFound)
        << r.sample_id;
  }
  // Everything else comes again, with its bytes.
  auto again = t.Lease({.max_refs = 100});
  ASSERT_TRUE(again.ok());
  std::set<std::string> want;
  for (size_t i = 2; i < 10; ++i) want.insert(refs[i].sample_id);
  auto ids = Ids(*again);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), want);
  EXPECT_EQ(ids.size(), 8u);
  for (const auto& r : *again) {
    EXPECT_TRUE(Intact(r)) << r.sample_id << " generation " << r.generation;
    EXPECT_EQ(r.nbytes, 20000u);
    EXPECT_EQ(r.metadata.at("policy_version"), "7");
    ASSERT_EQ(r.features.size(), 1u);
    EXPECT_EQ(r.features[0].name, "hidden");
  }
  ASSERT_TRUE(t.Ack(*again, 3, true).ok());
  info = t.Stat();
  EXPECT_EQ(info->acked(), 10u);
  EXPECT_EQ(info->resident_bytes(), 0u);
  EXPECT_EQ(client_->Stats()->objects(), 0u);
}

}  // namespace
}  // namespace cistern::testing
